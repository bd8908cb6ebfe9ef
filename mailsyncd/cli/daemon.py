"""mailsyncd: the daemon, in the foreground, logging to stderr."""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import sys

from .. import heap, logs, statedir
from ..errors import MailsyncError
from .common import add_config_options, load_checked_config


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="mailsyncd",
        description="Run the migration daemon in the foreground: the IMAP front door (employees log in "
                    "with their OLD password and land on the new server) and the scheduler that keeps "
                    "every mailbox it has a password for in sync until cutover.  Logs go to stderr "
                    "(the journal under systemd).  SIGHUP reloads the config; SIGTERM stops cleanly.",
        epilog="systemd: Type=notify (READY, STATUS, RELOADING, WATCHDOG, STOPPING), socket "
               "activation with sockets named imap and imaps.  See systemd/README.md.")
    add_config_options(ap, "override the config's log_level")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    statedir.private_umask()
    heap.tune()     # before any thread: each account's pass copies on several
    # From the first moment: a SIGHUP during start-up would otherwise kill the process (the default
    # action); it is remembered and applied once the daemon runs.
    reloads = _Reloads()
    signal.signal(signal.SIGHUP, reloads)
    config = load_checked_config(args.config, "mailsyncd")
    if config is None:
        return 1
    logs.setup(args.log_level or config.log_level)
    found, failed = {}, {}
    if any(d.source.auto for d in config.domains.values()):
        from ..providers.autodetect import resolve
        config, found, failed = resolve(config)
    from .. import systemd
    # Before anything imports twisted.internet.endpoints, which clears LISTEN_FDS from the environment.
    fds = systemd.listen_fds()
    unknown = sorted(set(fds) - {"imap", "imaps"})
    if unknown:
        logging.getLogger("mailsyncd").warning("event=unknown_sockets names=%s (expected imap, imaps)",
                                               ",".join(unknown))
    if not (config.listen.imap or config.listen.imaps or config.listen.http or fds.get("imap") or fds.get("imaps")):
        print("mailsyncd: nothing to listen on: add listen: {imap: HOST:PORT, imaps: HOST:PORT, http: HOST:PORT}",
              file=sys.stderr)
        return 1

    _raise_fd_limit()
    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    from ..daemon import Daemon
    from ..store.base import DatabaseUnavailable

    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)
    logging.getLogger("twisted").setLevel(logging.WARNING)
    log = logging.getLogger("mailsyncd")
    notifier = systemd.Notifier()
    try:
        daemon = Daemon(config, reactor, notifier=notifier, fds=fds)
        daemon.detected = {k: v.to_dict() for k, v in found.items()}
        daemon.detect_errors = failed
        # Twisted handles SIGINT and SIGTERM itself (a clean stop), but not SIGHUP.  Before READY=1
        # (sent by startService): a reload asked for from then on runs once the reactor does.
        reloads.target = lambda: reactor.callFromThread(daemon.reload)
        daemon.startService()
    except CannotListenError as e:
        err = e.socketError
        code = getattr(err, "errno", None)
        log.error("event=start_failed what='cannot listen' addr=%s:%s error=%r", e.interface or "*", e.port,
                  getattr(err, "strerror", None) or str(err))
        notifier.failed(f"start failed: cannot listen on {e.interface or '*'}:{e.port}: "
                        f"{getattr(err, 'strerror', None) or err}"[:200], code)
        return 1
    except DatabaseUnavailable as e:
        log.error("event=database_unavailable error=%r", str(e))
        notifier.failed(f"start failed: {e}"[:200])
        return 1
    except (MailsyncError, OSError) as e:
        log.error("event=start_failed error=%r", str(e))
        notifier.failed(f"start failed: {e}"[:200], getattr(e, "errno", None))
        return 1
    except Exception as e:  # noqa: BLE001 - whatever stops the start must end the process, not hang it
        log.error("event=start_failed error=%r", str(e))
        notifier.failed(f"start failed: {e}"[:200])
        return 1
    if reloads.pending:
        reactor.callWhenRunning(daemon.reload)
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stopService)
    reactor.run()
    return 0


class _Reloads:
    """The SIGHUP handler: before the daemon exists a reload is only remembered (``pending``)."""

    def __init__(self):
        self.pending = False
        self.target = None

    def __call__(self, signum, frame) -> None:
        if self.target is None:
            self.pending = True
        else:
            self.target()


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
