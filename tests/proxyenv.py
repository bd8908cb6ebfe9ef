"""Run the real ``mailsyncd`` daemon in front of a Dovecot pair, for front-door tests."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time

import yaml
from syncenv import REPO, make_config

from mailsyncd.testing import free_port


class Daemon:
    def __init__(self, tmp_path, pair, cert=None, *, frontdoor=None, source=None, target=None, sync=None,
                 scheduler=None, listen_host="127.0.0.1", env=None):
        self.tmp_path = tmp_path
        self.pair = pair
        self.cert = cert
        self.imap_port, self.imaps_port = free_port(), free_port()
        self.config_path = make_config(tmp_path, pair, source=source, target=target, sync=sync)
        with open(self.config_path) as f:
            doc = yaml.safe_load(f)
        for end in doc["domains"]["example.com"].values():   # target={"master_user": None} removes the key
            for k in [k for k, v in end.items() if v is None]:
                del end[k]
        doc["listen"] = {"imap": f"{listen_host}:{self.imap_port}"}
        if cert:
            doc["listen"]["imaps"] = f"{listen_host}:{self.imaps_port}"
            doc["tls"] = {"cert": cert[0], "key": cert[1]}
        fd = {"failure_delay": 0.05, "failure_delay_max": 0.2}
        if not cert:
            fd["allow_plaintext_login"] = True
        fd.update(frontdoor or {})
        doc["frontdoor"] = fd
        if scheduler:
            doc["scheduler"] = scheduler
        self.doc = doc
        self.env = env or {}
        self.save()
        self.log_path = str(tmp_path / "mailsyncd.log")
        self.state_dir = doc["state_dir"]
        self.proc: subprocess.Popen | None = None

    def save(self) -> None:
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.doc, f, allow_unicode=True)

    def start(self, timeout: float = 20) -> Daemon:
        self.spawn()
        deadline = time.monotonic() + timeout
        while self.log().count("event=ready") <= self._ready_before:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mailsyncd exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mailsyncd not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def spawn(self) -> None:
        """Start the process and return at once (start() also waits for event=ready)."""
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("JOURNAL_STREAM", None)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
            env.pop(k, None)
        env.update(self.env)
        self._ready_before = self.log().count("event=ready")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mailsyncd.cli.daemon", "--config", self.config_path,
                                      "--log-level", "debug"], stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=REPO, env=env)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in log after {timeout}s:\n{self.log()[-4000:]}")
            if self.proc.poll() is not None:
                raise AssertionError(f"mailsyncd exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            time.sleep(0.05)
        return self.log()

    def status_after(self, since: float | None = None, *, writes: int = 1, timeout: float = 30) -> dict:
        """The status file (daemon.json) as rewritten for the ``writes``-th time after ``since`` (time.time(),
        default now).

        Counters kept in memory (logins, login checks, the scheduler's) are current in the first rewrite.
        What the status loop reads from the store (phase counts, an import) needs ``writes=2``: the loop
        reads, then writes, every 2 s, so the second rewrite comes from a read that began after ``since``
        (and at least one scheduler tick, every 1 s, lies between).  A test that asserts "nothing
        happened" asserts it on this document, not after a sleep.
        """
        since = time.time() if since is None else since
        path = os.path.join(self.state_dir, "daemon.json")
        seen: set[float] = set()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path) as f:
                    doc = json.load(f)
            except (FileNotFoundError, ValueError):
                doc = None
            if doc is not None and doc["updated"] > since:
                seen.add(doc["updated"])
                if len(seen) >= writes:
                    return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon.json not rewritten {writes}x within {timeout}s:\n{self.log()[-4000:]}")
            if self.proc.poll() is not None:
                raise AssertionError(f"mailsyncd exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def sighup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def client_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cert[0])
        return ctx

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
