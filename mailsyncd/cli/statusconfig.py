"""The config ``mailsyncctl status`` works from.  The file when it loads; when it does not (an admin's edit
that a reload refused), what the running daemon recorded of its own generation in ``daemon.json``, so that
a broken file does not hide the daemon's state.  The state_dir then comes from ``--state-dir``, else from
the file's ``state_dir:`` line where that can still be read."""

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


def state_dir_of_text(path: str) -> str | None:
    """``state_dir`` of a config file that does not load as a whole, resolved as the loader does; None when
    the file cannot be read or names none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    value = None
    try:
        data = yaml.safe_load(text)
        if isinstance(data, dict) and isinstance(data.get("state_dir"), str):
            value = data["state_dir"]
    except yaml.YAMLError:
        m = _STATE_DIR_LINE.search(text)
        if m:
            value = next(g for g in m.groups() if g is not None)
    if not value:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), value))


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
    if state_dir is None or not os.path.exists(os.path.join(state_dir, "mailsyncd.sqlite3")):
        print(f"mailsyncctl: {args.config}: configuration is invalid:", file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        where = f"no state store in {state_dir}" if state_dir else "its state_dir cannot be read"
        print(f"mailsyncctl: status: {where}; pass --state-dir DIR", file=sys.stderr)
        return None, errors
    return _running_config(os.path.abspath(args.config), os.path.abspath(state_dir)), errors


def _running_config(path: str, state_dir: str) -> RunningConfig:
    cfg = RunningConfig(path=path, state_dir=state_dir)
    try:
        with open(os.path.join(state_dir, "daemon.json")) as f:
            rec = json.load(f).get("running_config")
    except (OSError, ValueError, AttributeError):
        rec = None
    if isinstance(rec, dict):
        cfg.from_daemon = True
        cfg.scheduler.pass_interval = float(rec.get("pass_interval") or 300.0)
        cfg.domains = {name: SimpleNamespace(cutover=at) for name, at in (rec.get("cutovers") or {}).items()}
        return cfg
    from ..store import Store      # no daemon record: the domains the store knows
    with closing(Store.in_state_dir(state_dir)) as store:
        cfg.domains = {d: SimpleNamespace(cutover=None) for d in store.account_domains()}
    return cfg
