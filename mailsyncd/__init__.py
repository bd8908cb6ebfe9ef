"""mailsyncd: migrate mailboxes from an old IMAP/POP3 server to a new one."""

__version__ = "0.1.0"
