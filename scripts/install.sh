#!/usr/bin/env bash
# Install mailsyncd as a service (Debian 12), from this source tree:
#   sudo scripts/install.sh               then edit /etc/mailsyncd/mailsyncd.yaml and enable the units
#   DESTDIR=/tmp/root scripts/install.sh  stage everything below /tmp/root (packaging, CI); touches nothing else
# Where (every path is prefixed with DESTDIR; the defaults in brackets):
#   PREFIX [/opt/mailsyncd]       the program: a venv with mailsyncd and its dependencies
#   LOCAL [/usr/local]            LOCAL/bin/{mailsyncd,mailsyncctl} (symlinks), LOCAL/lib/systemd/system/ (the
#                                 units, ExecStart= pointing into PREFIX), LOCAL/share/man/ (man pages),
#                                 LOCAL/share/{bash-completion/completions,zsh/site-functions}/
#   /etc/fail2ban/{filter.d,jail.d}/mailsyncd.conf  the filter, and the jail (disabled; an existing one is kept)
#   /etc/mailsyncd/mailsyncd.yaml the reference config with state_dir: /var/lib/mailsyncd, only if there is
#                                 none (an existing one is never touched); mailsyncd.yaml.dist beside it always
#   PYTHON [python3]              the interpreter the venv is made from (3.11 or newer)
# No system user: the unit runs with DynamicUser=yes, so systemd allocates one at each start, and
# StateDirectory=mailsyncd creates /var/lib/mailsyncd (-> /var/lib/private/mailsyncd, 0700) owned by it
# at the first start: a directory made here would belong to the wrong user.
# Every file made is listed in PREFIX/install-manifest, which scripts/uninstall.sh reads.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
PREFIX="${PREFIX:-/opt/mailsyncd}"
LOCAL="${LOCAL:-/usr/local}"
PYTHON="${PYTHON:-python3}"
CONFDIR=/etc/mailsyncd
STATEDIR=/var/lib/mailsyncd
UNITDIR="$LOCAL/lib/systemd/system"

case "$PREFIX" in /*) ;; *) echo "install: PREFIX must be an absolute path (got $PREFIX)" >&2; exit 2;; esac
if [ -e "$DESTDIR$PREFIX" ] && [ ! -f "$DESTDIR$PREFIX/install-manifest" ]; then
    echo "install: $DESTDIR$PREFIX exists and is not a mailsyncd install (no install-manifest): choose another PREFIX" >&2
    exit 1
fi
umask 022
[ -z "$DESTDIR" ] || install -d "$DESTDIR"
manifest=()     # final paths (without DESTDIR); "d PATH" for a directory made here, "c SHA256 PATH" for the config
mkdirs() {      # install -d, remembering each directory that did not exist
    local d
    for d in "$@"; do
        local missing=() p="$d"
        while [ "$p" != / ] && [ ! -d "$DESTDIR$p" ]; do missing=("$p" "${missing[@]}"); p="$(dirname "$p")"; done
        [ ${#missing[@]} -eq 0 ] && continue
        install -d -m 0755 "$DESTDIR$d"
        for p in "${missing[@]}"; do manifest+=("d $p"); done
    done
}
put() {         # put MODE FILE DEST: copy, remembered
    mkdirs "$(dirname "$3")"
    install -m "$1" "$2" "$DESTDIR$3"
    manifest+=("$3")
}

echo "install: the program into $DESTDIR$PREFIX"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# built from a copy: a build in the source tree would leave build/ and *.egg-info there
mkdir "$work/src"
cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/LICENSE" "$SRC/mailsyncd" "$work/src/"
fresh=0
[ -d "$DESTDIR$PREFIX" ] || fresh=1
mkdirs "$(dirname "$PREFIX")"
[ $fresh -eq 1 ] && manifest+=("d $PREFIX")
"$PYTHON" -m venv "$DESTDIR$PREFIX"
"$DESTDIR$PREFIX/bin/python" -m pip install -q --no-warn-script-location --upgrade "$work/src[docs]"
if [ -n "$DESTDIR" ]; then
    # the venv must work where it will live, not where it was staged: its scripts name their interpreter
    grep -rlF --null "$DESTDIR$PREFIX" "$DESTDIR$PREFIX/bin" | xargs -0 -r sed -i "s|$DESTDIR$PREFIX|$PREFIX|g"
fi
for prog in mailsyncd mailsyncctl; do
    mkdirs "$LOCAL/bin"
    ln -sfn "$PREFIX/bin/$prog" "$DESTDIR$LOCAL/bin/$prog"
    manifest+=("$LOCAL/bin/$prog")
done

echo "install: man pages and shell completion"
docs="$work/docs"
(cd "$work" && "$DESTDIR$PREFIX/bin/python" -m mailsyncd.docbuild --config "$SRC/etc/mailsyncd.yaml" "$docs" >/dev/null)
for page in "$docs"/man/*; do
    put 0644 "$page" "$LOCAL/share/man/man${page##*.}/$(basename "$page")"
done
for prog in mailsyncd mailsyncctl; do
    put 0644 "$docs/completion/bash/$prog" "$LOCAL/share/bash-completion/completions/$prog"
    put 0644 "$docs/completion/zsh/_$prog" "$LOCAL/share/zsh/site-functions/_$prog"
done

echo "install: the units into $DESTDIR$UNITDIR"
for unit in "$SRC"/systemd/*.service "$SRC"/systemd/*.socket; do
    sed "s|^ExecStart=/usr/bin/mailsyncd |ExecStart=$PREFIX/bin/mailsyncd |" "$unit" > "$docs/unit"
    put 0644 "$docs/unit" "$UNITDIR/$(basename "$unit")"
done

echo "install: the config in $DESTDIR$CONFDIR"
sed "s|^state_dir: .*|state_dir: $STATEDIR       # StateDirectory= of mailsyncd.service|" \
    "$SRC/etc/mailsyncd.yaml" > "$docs/mailsyncd.yaml"
put 0644 "$docs/mailsyncd.yaml" "$CONFDIR/mailsyncd.yaml.dist"
if [ -e "$DESTDIR$CONFDIR/mailsyncd.yaml" ]; then
    echo "install: kept the existing $DESTDIR$CONFDIR/mailsyncd.yaml (the new reference: mailsyncd.yaml.dist)"
else
    install -m 0644 "$docs/mailsyncd.yaml" "$DESTDIR$CONFDIR/mailsyncd.yaml"
    manifest+=("c $(sha256sum < "$docs/mailsyncd.yaml" | cut -d' ' -f1) $CONFDIR/mailsyncd.yaml")
fi

echo "install: the fail2ban filter and jail in $DESTDIR/etc/fail2ban (the jail disabled)"
put 0644 "$SRC/etc/fail2ban/filter.d/mailsyncd.conf" /etc/fail2ban/filter.d/mailsyncd.conf
# Banning is the admin's decision (behind HAProxy it needs the real client address in the log first:
# docs/deploy.md): the jail comes disabled, and an existing one is never touched.
jail=/etc/fail2ban/jail.d/mailsyncd.conf
if [ -e "$DESTDIR$jail" ]; then
    echo "install: kept the existing $DESTDIR$jail"
else
    mkdirs "$(dirname "$jail")"
    sed 's/^enabled\( *\)= true/enabled\1= false/' "$SRC/etc/fail2ban/jail.d/mailsyncd.conf" > "$DESTDIR$jail"
    chmod 0644 "$DESTDIR$jail"
    manifest+=("c $(sha256sum < "$DESTDIR$jail" | cut -d' ' -f1) $jail")
fi

# a reinstall keeps what the previous one recorded (its directories, the config it wrote)
old=()
[ -f "$DESTDIR$PREFIX/install-manifest" ] && mapfile -t old < "$DESTDIR$PREFIX/install-manifest"
manifest+=("$PREFIX/install-manifest")
printf '%s\n' "${old[@]}" "${manifest[@]}" | awk 'NF && !seen[$0]++' > "$DESTDIR$PREFIX/install-manifest"

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
cat <<EOF
install: done.  Next:
  1. edit $CONFDIR/mailsyncd.yaml (man 5 mailsyncd.yaml; secrets as credentials: systemd/README.md),
     then check it:  mailsyncctl check-config
  2. systemctl enable --now mailsyncd-imap.socket mailsyncd-imaps.socket mailsyncd.service
  3. to ban repeated wrong passwords: enabled = true in /etc/fail2ban/jail.d/mailsyncd.conf, then
     systemctl reload fail2ban (docs/deploy.md, section fail2ban)
Undo with scripts/uninstall.sh (keeps $STATEDIR unless --purge).
EOF
