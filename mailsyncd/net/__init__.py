"""The blocking clients every part shares: IMAP (imap.py) and POP3 (pop3.py), each behind its command guard."""
