#!/usr/bin/env bash
# Generate the man pages and shell completions from the argparse parsers and etc/mailsyncd.yaml:
#   scripts/build-docs.sh [OUTDIR]    writes OUTDIR/man/*.{1,5,8} and OUTDIR/completion/{bash,zsh}/ (default build/)
# Needs the `docs` extra (argparse-manpage, shtab); PYTHON picks the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build}"
exec "${PYTHON:-.venv/bin/python}" -m mailsyncd.docbuild --config etc/mailsyncd.yaml "$out"
