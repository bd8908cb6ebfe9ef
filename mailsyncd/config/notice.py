"""``notice:``: the "your mail has been moved" message appended once a mailbox is in sync."""

from dataclasses import dataclass

from ._base import _boolean, _Errors, _Section, _text


@dataclass(frozen=True, slots=True)
class Notice:
    enabled: bool = False               # append "your mail has been moved" once, when a mailbox is in sync
    sender: str = "Mail migration <postmaster@localhost>"



def _notice(errs: _Errors, node: object) -> Notice:
    s = _Section(errs, node, "notice", ("enabled", "from"))
    return Notice(enabled=s.get("enabled", _boolean, False),
                  sender=s.get("from", _text, "Mail migration <postmaster@localhost>"))


