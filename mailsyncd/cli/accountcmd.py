"""``mailsyncctl account remove|forget-password|retry ADDRESS``: change what the store keeps of one account,
confirmed first, never while the running daemon syncs it."""

from __future__ import annotations

import sys
from contextlib import closing

from ..text import shown
from .common import EXIT_ERROR, EXIT_OK, add_config_options, in_running_pass

ACTIONS = {
    "remove": ("remove {a} and everything kept about it (progress, UID map, reports, stored password)? "
               "Mail already copied stays on the new server", "delete every row of the account in the store, "
                                                             "its stored password securely"),
    "forget-password": ("destroy the stored old password of {a}? Syncing then waits for the user's next login",
                        "destroy the stored source password (securely deleted); syncing waits for the next login"),
    "retry": ("clear the failure of {a} so the daemon syncs it at its next tick?",
              "clear failed and the retry backoff: the running daemon syncs the account at its next tick"),
}


def add_parser(sub) -> None:
    p = sub.add_parser("account", help="remove an account, forget its stored password, or retry it now",
                       description="Change what the state store keeps of one account. Asks for confirmation on a "
                                   "terminal; scripts pass --yes (without a terminal and without --yes it refuses). "
                                   "Refused while a pass of the account is under way (this machine's daemon, or any "
                                   "node or one-off sync holding its lease in a shared database).")
    asub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (_q, text) in ACTIONS.items():
        a = asub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        a.add_argument("address")
        a.add_argument("--yes", "-y", action="store_true", help="do not ask (for scripts)")
        add_config_options(a, "override the config's log_level (logs go to stderr)", in_command=True)


def _confirmed(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        print("mailsyncctl: no terminal to ask on: pass --yes to confirm", file=sys.stderr)
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        print("mailsyncctl: nothing changed", file=sys.stderr)
        return False
    return True


def cmd_account(cfg, args) -> int:
    from ..store import Store
    from ..vault import Vault, VaultError
    address = args.address.strip().lower()
    with closing(Store.open(cfg)) as store:
        acct = store.account(address)
        if acct is None:
            print(f"mailsyncctl: no account {shown(address)} in {cfg.state_dir}", file=sys.stderr)
            return EXIT_ERROR
        if args.action == "retry" and acct["phase"] != "failed":
            print(f"mailsyncctl: {shown(address)} has not failed (phase {acct['phase']}): nothing to retry",
                  file=sys.stderr)
            return EXIT_ERROR
        question = ACTIONS[args.action][0].format(a=shown(address))
        if in_running_pass(cfg, address, store) or not _confirmed(question, args.yes):
            return EXIT_ERROR
        if in_running_pass(cfg, address, store):    # a pass may have begun while we asked
            return EXIT_ERROR
        if args.action == "remove":
            store.remove_account(address)
            print(f"{shown(address)}: removed from the state store")
        elif args.action == "forget-password":
            try:
                Vault.open(cfg.state_dir, store).forget_password(address)
            except VaultError as e:
                print(f"mailsyncctl: {e}", file=sys.stderr)
                return EXIT_ERROR
            print(f"{shown(address)}: stored source password destroyed; syncing resumes at the user's next login")
        else:
            store.retry_account(address)
            print(f"{shown(address)}: failure cleared; the running daemon syncs it at its next tick")
    return EXIT_OK
