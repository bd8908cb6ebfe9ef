"""mailsyncd: the daemon entry point (front door and scheduler arrive in later issues)."""

from __future__ import annotations

import argparse
import sys

from .. import __version__


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mailsyncd", description="mailsyncd daemon (not yet implemented: use "
                                 "`mailsyncctl sync` for one-shot migrations)")
    ap.add_argument("--config", "-c", metavar="FILE")
    ap.add_argument("--version", action="version", version=f"mailsyncd {__version__}")
    ap.parse_args(argv)
    print("mailsyncd: the daemon is not built yet; run `mailsyncctl --config FILE sync ADDRESS`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
