#!/usr/bin/env bash
# Quick start, command 2: set up, then run the whole test suite (real Dovecot servers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q -rs "$@"
