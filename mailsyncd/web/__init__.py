"""Web pages served by the daemon on ``listen.http`` (HTTPS when ``tls:`` is set).

* :mod:`.app` -- builds the site and mounts the pages (the composition root).
* :mod:`.site` -- the one HTTP shell under every page: requests, replies, cookies, forms, CSRF.
* :mod:`.access` -- who may use /admin, /api/ and /metrics; Host and cross-site checks.
* :mod:`.selfservice` -- plan 3: employees start their own migration and follow its progress.
* :mod:`.admin` -- the dashboard's routes and actions; :mod:`.samples` its throughput chart.
* :mod:`.api` and :mod:`.metrics` -- JSON and Prometheus for the admin.
* :mod:`.pages` -- the HTML; :mod:`.i18n` -- all words, in English and Chinese; :mod:`.assets` -- the stylesheet.
"""
