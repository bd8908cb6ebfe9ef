#!/usr/bin/env bash
# Install what mailsyncd and its tests need on Debian 12, into ./.venv (idempotent).
#   scripts/setup.sh          runtime + test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
# dovecot: the test servers; systemd: systemd-analyze for the unit checks; python3-seccomp: the
# test that runs the daemon under the unit's syscall filter; curl and isync (mbsync): real clients;
# chromium (+ a CJK font for the Chinese pages): the dashboard's browser test (driven by the
# playwright package from PyPI, no browser download); haproxy: the load balancer in front of several
# nodes (tests start their own in the foreground; the packaged service is not used); postgresql: the
# database: tests start their own server from its binaries (mailsyncd/testing/postgres.py) and never
# use the cluster Debian creates; man-db: the man page tests render them with `man -l`.
for pkg in dovecot-imapd dovecot-pop3d systemd python3-seccomp curl isync chromium fonts-wqy-microhei haproxy postgresql man-db; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v python3 >/dev/null || need+=(python3)
command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts the packaged dovecot service; our tests and demo run their own instances on
# free loopback ports, so the system one is not needed (and not touched).
# Courier-IMAP and Cyrus IMAP conflict with dovecot-imapd: unpacked into .servers/, never installed.
scripts/setup-servers.sh

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: ready ($(.venv/bin/python --version), dovecot $(/usr/sbin/dovecot --version | cut -d' ' -f1))"
