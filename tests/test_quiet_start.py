"""A clean start says nothing the admin can do nothing about: no Python warnings in the daemon's log, no
deprecation notice when pip builds the package."""

from __future__ import annotations

import imaplib
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from proxyenv import Daemon
from syncenv import REPO


@pytest.mark.dovecot
def test_a_clean_start_with_tls_logs_no_warning(tmp_path, dovecot_pair, test_cert):
    # Python shows every warning category once per place by default: the log would carry it
    with Daemon(tmp_path, dovecot_pair, test_cert) as d:
        c = imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, ssl_context=d.client_tls())   # implicit TLS handshake
        c.logout()
        c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        c.starttls(ssl_context=d.client_tls())                                        # and STARTTLS
        c.logout()
    log = d.log()
    assert "event=ready" in log and "event=stopped" in log, log
    assert not [ln for ln in log.splitlines() if "Warning" in ln or " WARNING " in ln], log


@pytest.mark.timeout(120)
def test_building_the_package_prints_no_deprecation(tmp_path):
    """What ``pip install .`` / ``-e .`` runs: a build in pip's isolated environment, here of a copy of
    the sources (a build in the checkout would leave build/ and *.egg-info behind).  About 3 s with
    the build requirements in reach (pip's index; offline: PIP_INDEX_URL=file:///...)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), src / name)
    shutil.copytree(os.path.join(REPO, "mailsyncd"), src / "mailsyncd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=110,
                       env=dict(os.environ, PIP_NO_INPUT="1"))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert not [ln for ln in out.splitlines() if "deprecat" in ln.lower()], out
    wheel = next((tmp_path / "dist").glob("mailsyncd-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        assert "License-Expression: MIT" in meta.splitlines(), meta[:2000]
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist())
