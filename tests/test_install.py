"""scripts/install.sh and scripts/uninstall.sh in a DESTDIR: every file lands where it should and works
from there, nothing outside DESTDIR changes, the admin's config is never overwritten, and uninstall
removes what install made but keeps the state (and a changed config) unless --purge."""

from __future__ import annotations

import os
import subprocess

import pytest
from syncenv import REPO

pytestmark = pytest.mark.timeout(400)

# where a careless install would write, and how deep to look
WATCHED = {"/etc": 3, "/opt": 3, "/usr/local": 6, "/usr/lib/systemd": 3, "/usr/share/man": 2,
           "/usr/share/bash-completion": 3, "/var/lib": 2}

EXPECTED = {
    "opt/mailsyncd/bin/mailsyncd", "opt/mailsyncd/bin/mailsyncctl", "opt/mailsyncd/pyvenv.cfg",
    "opt/mailsyncd/install-manifest",
    "usr/local/bin/mailsyncd", "usr/local/bin/mailsyncctl",
    "usr/local/lib/systemd/system/mailsyncd.service", "usr/local/lib/systemd/system/mailsyncd-imap.socket",
    "usr/local/lib/systemd/system/mailsyncd-imaps.socket",
    "usr/local/share/man/man8/mailsyncd.8", "usr/local/share/man/man1/mailsyncctl.1",
    "usr/local/share/man/man5/mailsyncd.yaml.5",
    "usr/local/share/bash-completion/completions/mailsyncctl", "usr/local/share/bash-completion/completions/mailsyncd",
    "usr/local/share/zsh/site-functions/_mailsyncctl", "usr/local/share/zsh/site-functions/_mailsyncd",
    "etc/mailsyncd/mailsyncd.yaml", "etc/mailsyncd/mailsyncd.yaml.dist",
    "etc/fail2ban/filter.d/mailsyncd.conf", "etc/fail2ban/jail.d/mailsyncd.conf",
}


def listing() -> set[str]:
    out = set()
    for top, depth in WATCHED.items():
        r = subprocess.run(["find", top, "-maxdepth", str(depth)], capture_output=True, text=True)
        out.update(r.stdout.splitlines())
    return out


def run(script, root, *args, **env):
    env = dict({k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
               DESTDIR=str(root), **env)
    r = subprocess.run([os.path.join(REPO, "scripts", script), *args], capture_output=True, text=True, env=env,
                       timeout=300, cwd=root.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def files(root) -> set[str]:
    out = set()
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if os.path.relpath(os.path.join(d, x), root) != "opt/mailsyncd/lib"]
        out.update(os.path.relpath(os.path.join(d, n), root) for n in names)
    return out


def test_install_then_uninstall_in_a_destdir(tmp_path):
    before = listing()
    # the build leaves nothing in the checkout (an egg-info there may be the dev venv's own editable install)
    litter = [os.path.join(REPO, x) for x in ("build", "mailsyncd.egg-info")]
    there = [os.path.exists(p) for p in litter]
    root = tmp_path / "root"
    out = run("install.sh", root)
    assert EXPECTED <= files(root), sorted(EXPECTED - files(root))
    assert [os.path.exists(p) for p in litter] == there

    # it works where it will live: the scripts name /opt/mailsyncd's interpreter, the unit starts it
    assert (root / "opt/mailsyncd/bin/mailsyncctl").read_text().startswith("#!/opt/mailsyncd/bin/python")
    assert os.readlink(root / "usr/local/bin/mailsyncctl") == "/opt/mailsyncd/bin/mailsyncctl"
    unit = (root / "usr/local/lib/systemd/system/mailsyncd.service").read_text()
    assert "\nExecStart=/opt/mailsyncd/bin/mailsyncd --config /etc/mailsyncd/mailsyncd.yaml\n" in unit
    assert "\nDynamicUser=yes\n" in unit      # why no system user is made
    assert "\nstate_dir: /var/lib/mailsyncd " in (root / "etc/mailsyncd/mailsyncd.yaml").read_text()
    # fail2ban: the shipped filter; the jail disabled (banning is the admin's decision), otherwise as shipped
    assert (root / "etc/fail2ban/filter.d/mailsyncd.conf").read_bytes() == \
        open(os.path.join(REPO, "etc/fail2ban/filter.d/mailsyncd.conf"), "rb").read()
    jail = (root / "etc/fail2ban/jail.d/mailsyncd.conf").read_text()
    assert "\nenabled      = false\n" in jail and jail.replace("= false", "= true", 1) == \
        open(os.path.join(REPO, "etc/fail2ban/jail.d/mailsyncd.conf")).read()
    r = subprocess.run([str(root / "opt/mailsyncd/bin/python"), "-c",
                        "import mailsyncd, sys; from mailsyncd.cli import ctl; print(mailsyncd.__file__); "
                        "ctl.main(['--version'])"], capture_output=True, text=True, cwd=tmp_path,
                       env={"PATH": os.environ["PATH"]})
    assert r.stdout.splitlines()[0].startswith(str(root / "opt/mailsyncd/lib/")), r.stdout + r.stderr
    assert r.stdout.splitlines()[1] == "mailsyncd 0.1.0", r.stdout

    # a reinstall never overwrites the admin's config
    config = root / "etc/mailsyncd/mailsyncd.yaml"
    config.write_text(config.read_text() + "# edited by the admin\n")
    out = run("install.sh", root)
    assert "kept the existing" in out and config.read_text().endswith("# edited by the admin\n")

    # what the service made at its first start (StateDirectory= with DynamicUser=)
    (root / "var/lib/private/mailsyncd").mkdir(parents=True)
    (root / "var/lib/private/mailsyncd/mailsyncd.db").write_text("state")
    os.symlink("private/mailsyncd", root / "var/lib/mailsyncd")

    out = run("uninstall.sh", root)
    assert "kept the state" in out and "kept" in out and "changed since the install" in out
    assert files(root) == {"etc/mailsyncd/mailsyncd.yaml", "var/lib/private/mailsyncd/mailsyncd.db"}, files(root)
    assert os.path.islink(root / "var/lib/mailsyncd")
    assert sorted(os.listdir(root)) == ["etc", "var"]      # every directory it made is gone

    # again, config untouched: --purge leaves nothing
    config.unlink()
    run("install.sh", root)
    run("uninstall.sh", root, "--purge")
    assert files(root) == set() and sorted(os.listdir(root)) == ["etc", "var"]   # both were there before it
    assert not (root / "etc/mailsyncd").exists()
    assert not os.path.lexists(root / "var/lib/mailsyncd")

    assert listing() == before
