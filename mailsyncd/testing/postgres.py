"""A throwaway PostgreSQL server for tests: Debian's binaries, its own data directory, one loopback port.

``initdb`` + ``pg_ctl`` from /usr/lib/postgresql/<major>/bin into a fresh directory under /tmp; the
system cluster and its service are never touched.  PostgreSQL refuses to run as root, so as root every
command runs as the ``postgres`` user (created by Debian's package) via ``runuser``, in a directory
that user owns (mkdtemp's 0700 directory, chowned; /tmp itself is traversable).  TCP on 127.0.0.1
only, the unix socket inside the data directory, fsync off (tests only: a crash loses nothing we keep).
``postgres`` runs in the foreground under the supervisor the other test servers use (common.Supervisor):
it never outlives the Python process that started it, however that process ends.

    with Postgres() as pg:
        url = pg.create_database("t1")     # postgresql://mailsyncd@127.0.0.1:PORT/t1
        ... password in pg.password_file ...
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from .common import Supervisor, free_port

_SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_supervise.py")

USER = "mailsyncd"                 # the role the store logs in as (not a superuser)
PASSWORD = "pg-test-pw-4f1c"       # a test server's password, only ever on 127.0.0.1


def pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def postgres_missing_reason() -> str | None:
    if pg_bindir() is None:
        return "PostgreSQL is not installed (Debian package 'postgresql')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


class Postgres:
    def __init__(self, root: str | None = None):
        self.bindir = pg_bindir()
        self.dir = tempfile.mkdtemp(prefix="mailsyncd-pg-", dir=root)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = 0
        self.password_file = os.path.join(self.dir, "password")
        self._as_root = os.geteuid() == 0
        self._running = False
        self._admin = None        # the superuser's kept connection (see _admin_conn)

    # -- as the postgres user -----------------------------------------------
    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(argv)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self, timeout: float = 60) -> Postgres:
        if not os.path.exists(self.data):
            self._initdb()
        if not self.port:
            self.port = free_port()
        cmd = [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port), "-k", self.dir,
               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
               "-c", "full_page_writes=off", "-c", "max_connections=200"]
        if self._as_root:
            cmd = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"] + cmd
        self._supervisor = Supervisor(_SUPERVISOR, [self.log, *cmd])
        self._running = True
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while self._run(os.path.join(self.bindir, "pg_isready"), "-q", "-h", self.dir, "-p", str(self.port),
                        check=False).returncode != 0:
            if not self._supervisor.running() or time.monotonic() > deadline:
                self.stop()
                log = open(self.log).read()[-2000:] if os.path.exists(self.log) else ""
                raise RuntimeError(f"postgres did not start on 127.0.0.1:{self.port}:\n{log}")
            time.sleep(0.05)
        return self

    def _initdb(self) -> None:
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        su_pw = os.path.join(self.dir, "superuser-password")
        with open(su_pw, "w") as f:
            f.write(PASSWORD + "\n")
        with open(self.password_file, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(self.password_file, 0o600)
        if self._as_root:
            os.chown(su_pw, pw.pw_uid, pw.pw_gid)
        # C locale: ORDER BY sorts as SQLite does (by code point), which the views and tests rely on
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres", "--pwfile", su_pw,
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--locale=C", "-E", "UTF8", "--no-sync")
        os.unlink(su_pw)

    def stop(self) -> None:
        """Immediate shutdown (no checkpoint: nothing here needs to survive but the files' consistency)."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._running:
            self._running = False
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate", "-w", "stop",
                      check=False)
            self._supervisor.stop(timeout=15)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- databases -------------------------------------------------------------
    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket (trust): setup only, never the code under test."""
        r = self._run(os.path.join(self.bindir, "psql"), "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                      "-d", db, "-v", "ON_ERROR_STOP=1", "-qAtc", sql, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr.strip()}")
        return r.stdout

    def _admin_conn(self):
        """The superuser's connection over the unix socket (trust), kept for the server's life: a database a
        test costs two statements, where psql costs a process (runuser + psql, ~0.3 s) each."""
        import psycopg
        if self._admin is None or self._admin.closed or self._admin.broken:
            self._admin = psycopg.connect(host=self.dir, port=self.port, user="postgres", dbname="postgres",
                                          autocommit=True)
        return self._admin

    def create_database(self, name: str) -> str:
        """A fresh database owned by USER (created on first use); returns its URL (no password in it)."""
        c = self._admin_conn()
        if c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (USER,)).fetchone() is None:
            c.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        c.execute(f'CREATE DATABASE "{name}" OWNER {USER} TEMPLATE template0 ENCODING \'UTF8\' LOCALE \'C\'')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, ending its sessions (WITH (FORCE))."""
        self._admin_conn().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"
