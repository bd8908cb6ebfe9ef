"""Watching each account's source INBOX between passes, so new mail is copied in seconds (issue 14).

``policy``: pure decisions (which mode, intervals, backoff, caps, what counts as a change).
``conn``: one Twisted connection per watch (IDLE, with NOTIFY where offered) or per poll (STATUS); no threads.
``manager``: keeps the watches in line with the scheduler's accounts, the config and the source budget.
"""
