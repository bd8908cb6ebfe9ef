"""Throwaway Courier-IMAP servers for tests (Debian's courier-imap 5.0, run from the private
prefix; see :mod:`mailsyncd.testing.private`)::

    with Courier(tmpdir, "source", {"alice@example.com": "pw"}) as c:
        imapclient.IMAPClient("127.0.0.1", port=c.imap_port, ssl=False).login(...)

Courier keeps folders as maildir++ subfolders (``Maildir/.Sent``): its only namespace is the
personal ``"INBOX."`` with separator ``"."``.  Processes (all in the instance's mount namespace):
``authdaemond`` (authlib, module ``authuserdb``; ``/etc/courier`` there is the instance's
``etc/courier``, ``/run/courier`` a private tmpfs) and ``couriertcpd`` on 127.0.0.1, which runs
``imaplogin`` + ``imapd`` per connection, configured by environment variables exactly like
Debian's ``/etc/courier/imapd`` does.  Mail belongs to ``nobody:nogroup``.

Layout of ``root/name``::

    start.sh  server.log  etc/courier/{authdaemonrc,userdb.dat,userdbshadow.dat}
    home/<login>/Maildir
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
import shlex
import subprocess

from mailsyncd.testing.private import PrivateServer, ServerError, missing_reason, private_root

__all__ = ["Courier", "courier_missing_reason"]

_BINARIES = ("usr/sbin/couriertcpd", "usr/lib/courier/courier/imaplogin", "usr/bin/imapd",
             "usr/lib/courier/courier-authlib/authdaemond", "usr/lib/courier-authlib/libauthuserdb.so",
             "usr/lib/courier/courier-authlib/makedatprog")

# Debian's /etc/courier/imapd defaults, minus what a test server must not do (purge Trash after
# 7 days, look up DNS) -- couriertcpd passes its environment on to imaplogin and imapd
_IMAPD_ENV = {
    "IMAP_CAPABILITY": "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT "
                       "THREAD=REFERENCES SORT QUOTA IDLE AUTH=PLAIN",
    "IMAP_KEYWORDS": "1",
    "IMAP_ACL": "1",
    "IMAP_PROXY": "0",
    "IMAP_IDLE_TIMEOUT": "60",
    "IMAP_MAILBOX_SANITY_CHECK": "1",
    "IMAP_DISABLETHREADSORT": "0",
    "IMAP_CHECK_ALL_FOLDERS": "0",
    "IMAP_OBSOLETE_CLIENT": "0",
    "IMAP_UMASK": "022",
    "IMAP_USELOCKS": "1",
    "IMAP_ENHANCEDIDLE": "0",
    "IMAP_TRASHFOLDERNAME": "Trash",
    "IMAP_EMPTYTRASH": "",
    "IMAP_MOVE_EXPUNGE_TO_TRASH": "0",
    "IMAP_STARTTLS": "NO",
    "IMAP_TLS_REQUIRED": "0",
    "SENDMAIL": "/bin/false",
    "HEADERFROM": "X-IMAP-Sender",
}


def courier_missing_reason() -> str | None:
    """None when Courier-IMAP can be started here, else a human-readable reason."""
    return missing_reason(*_BINARIES)


class Courier(PrivateServer):
    """One throwaway Courier-IMAP instance in ``root/name`` (see the module docstring)."""

    kind = "courier"

    def __init__(self, root: str, name: str, users: dict[str, str], *,
                 imap_env: dict[str, str] | None = None) -> None:
        super().__init__(root, name, users)
        self.imap_env = {**_IMAPD_ENV, **(imap_env or {})}

    def home(self, user: str) -> str:
        return os.path.join(self.dir, "home", user)

    def maildir(self, user: str) -> str:
        return os.path.join(self.home(user), "Maildir")

    def _prepare(self) -> str:
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        conf = os.path.join(self.dir, "etc", "courier")
        os.makedirs(conf, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "home"), exist_ok=True)
        os.chmod(os.path.join(self.dir, "home"), 0o755)
        for user in self.users:
            for sub in ("", "cur", "new", "tmp"):
                d = os.path.join(self.maildir(user), sub)
                os.makedirs(d, exist_ok=True)
            for d in (self.home(user), *(os.path.join(self.maildir(user), s) for s in ("", "cur", "new", "tmp"))):
                os.chown(d, uid, gid)
                os.chmod(d, 0o700)
        with open(os.path.join(conf, "authdaemonrc"), "w") as f:
            f.write('authmodulelist="authuserdb"\nauthmodulelistorig="authuserdb"\ndaemons=2\n'
                    'authdaemonvar=/run/courier/authdaemon\nDEBUG_LOGIN=0\nDEFAULTOPTIONS=""\n'
                    'LOGGEROPTS=""\n')
        # userdb: "login<TAB>field=value|..."; the password hash goes to the shadow file
        # (authlib's {SHA256} = base64 of the digest -- never the password itself)
        db, shadow = [], []
        for user, password in self.users.items():
            db.append(f"{user}\tuid={uid}|gid={gid}|home={self.home(user)}|mail={self.maildir(user)}|_=\n")
            digest = base64.b64encode(hashlib.sha256(password.encode()).digest()).decode()
            shadow.append(f"{user}\tsystempw={{SHA256}}{digest}\n")
        self._makedat(conf, "userdb", db)
        self._makedat(conf, "userdbshadow", shadow)
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.imap_env.items())
        return (
            "mkdir -p /run/courier/authdaemon\n"
            "/usr/lib/courier/courier-authlib/authdaemond &\n"
            "n=0\n"
            "while [ ! -S /run/courier/authdaemon/socket ]; do\n"
            "  n=$((n+1)); [ $n -lt 1000 ] || { echo 'authdaemond did not start'; exit 1; }\n"
            "  sleep 0.005\n"
            "done\n"
            f"exec env -i PATH=/usr/bin:/bin {env} /usr/sbin/couriertcpd -address=127.0.0.1 "
            f"-maxprocs=40 -maxperip=40 -nodnslookup -noidentlookup {self.imap_port} "
            "/usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir\n")

    def _makedat(self, conf: str, name: str, lines: list[str]) -> None:
        prog = os.path.join(private_root(), "usr/lib/courier/courier-authlib/makedatprog")
        dat = os.path.join(conf, name + ".dat")
        cp = subprocess.run([prog, "-", dat + ".tmp", dat], input="".join(lines) + ".\n",
                            capture_output=True, text=True, timeout=30)
        if cp.returncode != 0:
            raise ServerError(f"{prog} {dat}: {cp.stderr.strip() or cp.stdout.strip()}")
        os.chmod(dat, 0o600)
