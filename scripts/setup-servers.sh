#!/usr/bin/env bash
# Courier-IMAP, Cyrus IMAP and fail2ban for the tests, unpacked into a private prefix (idempotent).
#
#   scripts/setup-servers.sh      (called by scripts/setup.sh; root or sudo; no stdin needed)
#
# In Debian dovecot-imapd, courier-imap and cyrus-imapd all provide and conflict with
# imap-server: `apt-get install courier-imap` silently removes dovecot-imapd.  So the server
# packages are only downloaded (`apt-get download`) into .servers/debs and unpacked with
# `dpkg -x` into .servers/root -- no maintainer scripts, nothing under /etc, no service, no
# system user.  The test fixtures (mailsyncd/testing/) run them from there.  Only the shared
# libraries they link against are installed with apt, after a simulated run has shown that
# nothing would be removed.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

DEST=.servers
# Unpacked, never installed.  Besides the two imap-server packages: their own helper packages
# (courier-base, cyrus-common, courier-authlib...), whose maintainer scripts would create system
# users and services and which depend on an MTA; and sasl2-bin for saslpasswd2 (Cyrus's sasldb).
# fail2ban too, for fail2ban-regex against our filter (tests/test_fail2ban.py): installed, it would
# start its own service with an sshd jail.
PRIVATE=(courier-imap courier-base courier-authlib courier-authdaemon courier-authlib-userdb
         cyrus-imapd cyrus-common sasl2-bin fail2ban)
STAMP="$DEST/root/.complete"

mkdir -p "$DEST/debs"
missing=()
for p in "${PRIVATE[@]}"; do
    compgen -G "$DEST/debs/${p}_*.deb" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-servers: downloading ${missing[*]}"
    # apt's sandbox user cannot write into a root-owned work tree: download in a temp dir
    tmp=$(mktemp -d)
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -q "${missing[@]}" >/dev/null 2>&1) || {
        $SUDO apt-get update -qq
        (cd "$tmp" && apt-get download -q "${missing[@]}" >/dev/null)
    }
    mv "$tmp"/*.deb "$DEST/debs/"
    rmdir "$tmp"
    rm -f "$STAMP"
fi

# Their dependencies: only shared libraries (lib*) that are not installed yet; the first
# alternative of a group unless one alternative is installed already.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
libs=()
while read -r group; do
    [ -n "$group" ] || continue
    have=""
    for alt in ${group//|/ }; do
        installed "$alt" && have=1
    done
    first=${group%%|*}
    first=${first// /}
    if [ -z "$have" ] && [[ $first == lib* ]] && [[ " ${libs[*]} " != *" $first "* ]]; then
        libs+=("$first")
    fi
done < <(for f in "$DEST"/debs/*.deb; do dpkg-deb -f "$f" Depends Pre-Depends; done \
         | sed 's/^\(Pre-\)\{0,1\}Depends: *//' | tr ',' '\n' \
         | sed 's/([^)]*)//g; s/:any//g; s/^ *//; s/ *$//')
if [ ${#libs[@]} -gt 0 ]; then
    echo "setup-servers: installing libraries: ${libs[*]}"
    sim=$(apt-get install -s --no-install-recommends "${libs[@]}")
    if grep -q '^Remv' <<<"$sim"; then
        echo "setup-servers: REFUSING: installing ${libs[*]} would remove packages:" >&2
        grep '^Remv' <<<"$sim" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${libs[@]}" >/dev/null
fi

if [ ! -e "$STAMP" ]; then
    echo "setup-servers: unpacking into $DEST/root"
    rm -rf "$DEST/root"
    mkdir -p "$DEST/root"
    for f in "$DEST"/debs/*.deb; do
        dpkg -x "$f" "$DEST/root"
    done
    touch "$STAMP"
fi

# Every binary the fixtures run must find its libraries (the private ones included).
root=$(cd "$DEST/root" && pwd)
export LD_LIBRARY_PATH="$root/usr/lib:$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/courier-authlib"
bad=0
for b in usr/lib/courier/courier/imaplogin usr/bin/imapd usr/sbin/couriertcpd \
         usr/lib/courier/courier-authlib/authdaemond usr/lib/courier-authlib/libauthuserdb.so \
         usr/lib/cyrus/bin/master usr/lib/cyrus/bin/imapd usr/lib/cyrus/bin/ctl_cyrusdb \
         usr/sbin/saslpasswd2; do
    if [ ! -e "$root/$b" ]; then
        echo "setup-servers: missing $root/$b" >&2; bad=1
    elif ldd "$root/$b" | grep -q 'not found'; then
        echo "setup-servers: $b: $(ldd "$root/$b" | grep 'not found' | tr -s ' \t' ' ')" >&2; bad=1
    fi
done
[ -e "$root/usr/bin/fail2ban-regex" ] || { echo "setup-servers: missing $root/usr/bin/fail2ban-regex" >&2; bad=1; }
[ $bad -eq 0 ] || exit 1
echo "setup-servers: ready (Courier-IMAP, Cyrus IMAP, fail2ban-regex in $DEST/root)"
