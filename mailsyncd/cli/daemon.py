"""mailsyncd: the daemon, in the foreground, logging to stderr."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys

from .. import __version__, logs
from ..config import ConfigError, load_config
from ..errors import MailsyncError

DEFAULT_CONFIG = os.environ.get("MAILSYNCD_CONFIG", "/etc/mailsyncd/mailsyncd.yaml")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mailsyncd",
        description="Run the migration daemon in the foreground: the IMAP front door (employees log in "
                    "with their OLD password and land on the new server) and the background copy that "
                    "each first login starts.  Logs go to stderr; stop with Ctrl-C or SIGTERM.")
    ap.add_argument("--config", "-c", default=DEFAULT_CONFIG, metavar="FILE",
                    help=f"YAML config file (default: $MAILSYNCD_CONFIG or {DEFAULT_CONFIG})")
    ap.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                    help="override the config's log_level")
    ap.add_argument("--version", action="version", version=f"mailsyncd {__version__}")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"mailsyncd: config error in {args.config}:", file=sys.stderr)
        for err in e.errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    logs.setup(args.log_level or config.log_level)
    if not (config.listen.imap or config.listen.imaps):
        print("mailsyncd: nothing to listen on: add listen: {imap: HOST:PORT, imaps: HOST:PORT}", file=sys.stderr)
        return 1

    _raise_fd_limit()
    from twisted.internet import reactor
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    from ..daemon import Daemon

    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)
    logging.getLogger("twisted").setLevel(logging.WARNING)
    try:
        daemon = Daemon(config, reactor)
        daemon.startService()
    except (MailsyncError, OSError) as e:
        logging.getLogger("mailsyncd").error("event=start_failed error=%r", str(e))
        return 1
    except Exception as e:  # a listener that cannot bind raises CannotListenError
        logging.getLogger("mailsyncd").error("event=start_failed error=%r", str(e))
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stopService)
    reactor.run()
    return 0


def _raise_fd_limit() -> None:
    # Each relayed session holds two sockets; the default soft limit (1024) caps us near 500 users.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass


if __name__ == "__main__":
    sys.exit(main())
