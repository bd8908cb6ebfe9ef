"""What ``mailsyncctl`` and ``mailsyncd`` share: the config options, loading and checking the config
with every error listed, and an account's old password."""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import closing

from .. import __version__

DEFAULT_CONFIG = os.environ.get("MAILSYNCD_CONFIG", "/etc/mailsyncd/mailsyncd.yaml")
# exit codes (documented in --help)
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_RESTART, EXIT_CONFIG_BROKEN, EXIT_BUSY = 0, 1, 2, 3, 4, 5, 6
EXIT_PIPE = 141     # the shell's code for a process ended by SIGPIPE: `mailsyncctl status | head`

EPILOG = """exit codes:
  0    done: for sync, every source message is on the target
  1    failed (config error, login refused, server unreachable, ...)
  2    bad command line
  3    sync finished, but some messages were skipped or some folders failed (see the report)
  4    reload: the new config is in force, but part of it (listen addresses, state_dir) waits for a restart
  5    status: the last reload failed or the config file has errors (the daemon runs its previous config)
  6    sync: a daemon (this one or another node) is syncing the account, or the source host had no free
       connection within node.lease_seconds: nothing was done, try again later
  141  the reader of the output went away (e.g. `| head`): the output was cut short
"""


def add_config_options(ap: argparse.ArgumentParser, log_help: str, *, in_command: bool = False) -> None:
    """--config and --log-level; ``in_command``: the copy a subcommand takes (`mailsyncctl status -c F`),
    whose SUPPRESS default keeps a value given before the subcommand."""
    ap.add_argument("--config", "-c", default=argparse.SUPPRESS if in_command else DEFAULT_CONFIG, metavar="FILE",
                    help=f"YAML config file (default: $MAILSYNCD_CONFIG or {DEFAULT_CONFIG})")
    ap.add_argument("--log-level", default=argparse.SUPPRESS if in_command else None,
                    choices=["debug", "info", "warning", "error"], help=log_help)
    if not in_command:
        ap.add_argument("--version", action="version", version=f"mailsyncd {__version__}")


def load_checked_config(path: str, prog: str):
    """The config, its state_dir checked; None once every problem is said on stderr."""
    from .. import statedir
    from ..config import ConfigError, load_config
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"{prog}: {path}: configuration is invalid:", file=sys.stderr)
        for err in e.errors:
            print(f"  {err}", file=sys.stderr)
        return None
    try:
        statedir.check(cfg.state_dir)
    except statedir.StateDirError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    return cfg


def state_usable(path: str) -> bool:
    """Whether mailsyncctl may open the state in ``path``; when not, what to do is said on stderr."""
    from .. import statedir
    try:
        statedir.check_access(path)
    except statedir.StateDirError as e:
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return False
    return True


def account_domain(cfg, address: str):
    """The config's domain of ``address``; None once said on stderr."""
    from ..config import UnknownDomain
    try:
        return cfg.domain_for(address)
    except (UnknownDomain, ValueError) as e:
        print(f"mailsyncctl: {e}", file=sys.stderr)
        return None


def read_password(path: str) -> str:
    if path == "-":
        line = sys.stdin.readline()
    else:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    return line.rstrip("\r\n")


def account_password(cfg, args) -> str | None:
    """The account's old password from --password-file or the vault; None (said on stderr) if neither."""
    if args.password_file:
        try:
            return read_password(args.password_file)
        except OSError as e:
            print(f"mailsyncctl: cannot read password file: {e.strerror}: {args.password_file}", file=sys.stderr)
            return None
    from ..store import Store
    from ..vault import Vault, VaultError    # here: cryptography and argon2 are 6 MB of RSS
    with closing(Store.open(cfg)) as store:
        try:
            password = Vault.open(cfg.state_dir, store).source_password(args.address)
        except VaultError as e:
            print(f"mailsyncctl: {e}", file=sys.stderr)
            return None
    if password is None:
        print(f"mailsyncctl: no stored source password for {args.address}; pass --password-file FILE",
              file=sys.stderr)
    return password


def in_running_pass(cfg, address: str, store=None) -> bool:
    """Whether a pass of ``address`` is under way: in the daemon running on this state_dir (its daemon.json,
    as `status` reads it) or, with ``store``, on any node or one-off sync holding the account's lease (a
    shared database); said on stderr when so."""
    from .control import read_status
    doc = read_status(cfg)
    if doc is not None and address in (doc.get("live") or {}):
        print(f"mailsyncctl: {address}: the running mailsyncd (pid {doc['pid']}) is syncing it now; "
              "try again when its pass has ended (mailsyncctl status --user ADDRESS)", file=sys.stderr)
        return True
    if store is None:
        return False
    now = time.time()
    held = [row for row in store.leases() if row["account"] == address and row["expires"] > now]
    if not held:
        return False
    print(f"mailsyncctl: {address}: node {held[0]['node']} holds its lease (a pass under way) for "
          f"{held[0]['expires'] - now:.0f} s more; try again when its pass has ended", file=sys.stderr)
    return True
