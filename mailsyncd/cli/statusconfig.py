"""The config ``mailsyncctl status`` works from.  The file when it loads; when it does not (an admin's edit
that a reload refused), what the running daemon recorded of its own generation in ``daemon.json``, so that
a broken file does not hide the daemon's state.  The state_dir then comes from ``--state-dir``, else from
the file's ``state_dir:`` line where that can still be read; the store (``database:``) from the daemon's
record, else from the file's ``database:`` section where that still parses and validates."""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import closing
from dataclasses import dataclass, field
from types import SimpleNamespace

import yaml

_STATE_DIR_LINE = re.compile(r"""^state_dir:[ \t]*(?:"([^"\n]*)"|'([^'\n]*)'|([^#\n]*?))[ \t]*(?:#.*)?$""",
                             re.MULTILINE)


@dataclass
class RunningConfig:
    """The few parts of a Config that status reads, rebuilt from daemon.json or the store."""
    path: str
    state_dir: str
    domains: dict = field(default_factory=dict)
    scheduler: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(pass_interval=300.0))
    log_level: str = "warning"
    from_daemon: bool = False
    database: object = None             # config.Database of the store; None: SQLite in state_dir


def _document(path: str) -> tuple[str | None, object]:
    """(text, parsed YAML or None) of a config file that does not load as a whole."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None, None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError:
        return text, None


def state_dir_of_text(path: str) -> str | None:
    """``state_dir`` of a config file that does not load as a whole, resolved as the loader does; None when
    the file cannot be read or names none."""
    text, data = _document(path)
    if text is None:
        return None
    value = None
    if isinstance(data, dict) and isinstance(data.get("state_dir"), str):
        value = data["state_dir"]
    elif data is None:
        m = _STATE_DIR_LINE.search(text)
        if m:
            value = next(g for g in m.groups() if g is not None)
    if not value:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), value))


def _database_of_text(path: str):
    """The file's ``database:`` (config.Database) when that section alone parses and validates, else None."""
    from ..config._base import _Errors
    from ..config.database import _database
    _text, data = _document(path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        return None
    errs = _Errors()
    db = _database(errs, data["database"], os.path.dirname(os.path.abspath(path)))
    return None if errs or db.url is None else db


def _daemon_record(state_dir: str) -> dict | None:
    """What the running daemon recorded of its generation's config (daemon.json), if it did."""
    try:
        with open(os.path.join(state_dir, "daemon.json")) as f:
            rec = json.load(f).get("running_config")
    except (OSError, ValueError, AttributeError):
        return None
    return rec if isinstance(rec, dict) else None


def _recorded_database(rec: dict | None):
    from ..config.database import Database
    db = (rec or {}).get("database")
    if not isinstance(db, dict) or not isinstance(db.get("url"), str):
        return None
    pool = db.get("pool_size")
    return Database(url=db["url"], password_file=db.get("password_file"),
                    pool_size=pool if isinstance(pool, int) and not isinstance(pool, bool) else 8)


def load(args):
    """(config, errors of the file): the loaded Config and no errors, or a RunningConfig and the file's
    errors; (None, errors) once said on stderr when not even the state can be found."""
    from .. import statedir
    from ..config import ConfigError, load_config
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        errors = list(e.errors)
    else:
        try:
            statedir.check(cfg.state_dir)
        except statedir.StateDirError as e:
            print(f"mailsyncctl: {e}", file=sys.stderr)
            return None, [str(e)]
        return cfg, []
    state_dir = getattr(args, "state_dir", None) or state_dir_of_text(args.config)
    rec = _daemon_record(state_dir) if state_dir is not None else None
    database = _recorded_database(rec) or _database_of_text(args.config)
    if state_dir is None or (database is None and not os.path.exists(os.path.join(state_dir, "mailsyncd.sqlite3"))):
        print(f"mailsyncctl: {args.config}: configuration is invalid:", file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        where = f"no state store in {state_dir}" if state_dir else "its state_dir cannot be read"
        print(f"mailsyncctl: status: {where}; pass --state-dir DIR", file=sys.stderr)
        return None, errors
    return _running_config(os.path.abspath(args.config), os.path.abspath(state_dir), rec, database), errors


def _running_config(path: str, state_dir: str, rec: dict | None, database) -> RunningConfig:
    cfg = RunningConfig(path=path, state_dir=state_dir, database=database)
    if rec is not None:
        cfg.from_daemon = True
        cfg.scheduler.pass_interval = float(rec.get("pass_interval") or 300.0)
        cfg.domains = {name: SimpleNamespace(cutover=at) for name, at in (rec.get("cutovers") or {}).items()}
        return cfg
    from ..store import Store      # no daemon record: the domains the store knows
    with closing(Store.open(cfg)) as store:
        cfg.domains = {d: SimpleNamespace(cutover=None) for d in store.account_domains()}
    return cfg
