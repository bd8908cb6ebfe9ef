"""The README's first command: the demo runs the real daemon end to end."""

import pytest
from syncenv import ctl


@pytest.mark.dovecot
@pytest.mark.timeout(300)
def test_demo_logs_in_with_the_old_password_and_migrates():
    r = ctl("demo", "--messages", "80")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "logs in with the OLD password" in r.stdout
    assert "IDENTICAL: 80 messages in 6 folders" in r.stdout
    assert "progress messages=80/80 (100%)" in r.stderr
    assert "Traceback" not in r.stderr
