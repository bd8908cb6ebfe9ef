"""HTML builders: functions of data and a language that return markup, with no request handling.

* :mod:`.selfservice` -- the employees' form and progress page.
* :mod:`.dashboard` -- the admin dashboard's frame, shared pieces and overview; :mod:`.accounts` its
  account list and account page; :mod:`.format` numbers, times and sizes as the dashboard shows them.
"""
