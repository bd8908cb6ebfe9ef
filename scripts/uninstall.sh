#!/usr/bin/env bash
# Undo scripts/install.sh: remove what it made (its PREFIX/install-manifest lists it), with the same
# DESTDIR and PREFIX.  The state (/var/lib/mailsyncd: the database, the vault key, the sealed passwords)
# and a config changed since the install are kept, unless --purge.
#   sudo scripts/uninstall.sh [--purge]
set -euo pipefail
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
PREFIX="${PREFIX:-/opt/mailsyncd}"
STATEDIR=/var/lib/mailsyncd
purge=0
case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) echo "usage: [DESTDIR=...] [PREFIX=...] $0 [--purge]" >&2; exit 2 ;;
esac
list="$DESTDIR$PREFIX/install-manifest"
if [ ! -f "$list" ]; then
    echo "uninstall: no $list: nothing installed there by scripts/install.sh (same DESTDIR and PREFIX?)" >&2
    exit 1
fi
mapfile -t manifest < "$list"

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now mailsyncd-imap.socket mailsyncd-imaps.socket mailsyncd.service 2>/dev/null || true
fi
dirs=()
for entry in "${manifest[@]}"; do
    case "$entry" in
        "d "*) dirs=("${entry#d }" "${dirs[@]}") ;;     # deepest last made: removed first
        "c "*)
            read -r _ sum path <<< "$entry"
            if [ $purge -eq 1 ] || [ "$(sha256sum < "$DESTDIR$path" 2>/dev/null | cut -d' ' -f1)" = "$sum" ]; then
                rm -f "$DESTDIR$path"
            elif [ -e "$DESTDIR$path" ]; then
                echo "uninstall: kept $DESTDIR$path (changed since the install; --purge removes it)"
            fi ;;
        "$PREFIX"/*) ;;                                  # the venv goes as a whole, below
        *) rm -f "$DESTDIR$entry" ;;
    esac
done
if [ -f "$DESTDIR$PREFIX/pyvenv.cfg" ]; then
    rm -rf "$DESTDIR$PREFIX"
fi
if [ $purge -eq 1 ]; then
    # StateDirectory= with DynamicUser=: the symlink and the directory it points to
    rm -rf "$DESTDIR$STATEDIR" "$DESTDIR/var/lib/private/mailsyncd"
    rm -f "$DESTDIR/etc/mailsyncd/mailsyncd.yaml" "$DESTDIR/etc/mailsyncd/mailsyncd.yaml.dist"
    rmdir "$DESTDIR/etc/mailsyncd" 2>/dev/null || true
fi
for d in "${dirs[@]}"; do
    rmdir "$DESTDIR$d" 2>/dev/null || true                  # only when empty: someone else's files stay
done
[ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
if [ $purge -eq 0 ] && [ -e "$DESTDIR$STATEDIR" ]; then
    echo "uninstall: kept the state in $DESTDIR$STATEDIR (--purge removes it)"
fi
echo "uninstall: done"
