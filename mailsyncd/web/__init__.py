"""Web pages served by the daemon on ``listen.http`` (HTTPS when ``tls:`` is set).

* :mod:`.selfservice` -- plan 3: employees start their own migration and follow its progress.
* :mod:`.i18n` -- the pages' words in English and Chinese.
* :mod:`.assets` -- the stylesheet.
"""
