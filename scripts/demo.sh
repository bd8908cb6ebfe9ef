#!/usr/bin/env bash
# Quick start, command 1: set up, then migrate a demo mailbox between two local Dovecot servers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/mailsyncctl demo "$@"
