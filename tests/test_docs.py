"""The man pages and shell completions are generated (scripts/build-docs.sh) and usable: `man -l`
renders each, the config page covers every key the config parser knows, bash loads the completion."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from syncenv import REPO

from mailsyncd.config import ConfigError, _base, load_config
from mailsyncd.config.frontdoor import _FD_RENAMED

REFERENCE = os.path.join(REPO, "etc", "mailsyncd.yaml")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    r = subprocess.run([os.path.join(REPO, "scripts", "build-docs.sh"), str(out)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHON=sys.executable), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def man(path) -> str:
    r = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MANWIDTH="200", MAN_KEEP_FORMATTING="", LC_ALL="C.UTF-8"))
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    return r.stdout


@pytest.mark.parametrize("page, expect", [
    ("mailsyncd.8", ["--config FILE", "SIGHUP reloads the config", "mailsyncd.yaml(5)"]),
    ("mailsyncctl.1", ["mailsyncctl check-config", "--state-dir DIR", "exit codes:", "141"]),
    ("mailsyncd.yaml.5", ["state_dir: ./state", "max_message_size", "mailsyncctl check-config"]),
])
def test_man_renders_each_page(built, page, expect):
    text = man(built / "man" / page)
    assert text.startswith(page.rsplit(".", 1)[0].upper()), text[:200]
    for word in expect:
        assert word in text, (word, text[:3000])


def _schema_keys() -> set[tuple[str, str]]:
    """(section path, key) for every key the config parser accepts, as it walks the reference config
    (a missing section is read as empty, so each section's allowed keys show)."""
    seen = set()
    real = _base._Section.__init__

    def spy(self, errs, node, path, allowed):
        seen.update((path, k) for k in allowed)
        real(self, errs, node, path, allowed)
    _base._Section.__init__ = spy
    try:
        load_config(REFERENCE)
    except ConfigError:
        pass    # its tls/ and master.secret do not exist here; every section was read anyway
    finally:
        _base._Section.__init__ = real
    return seen


def test_config_page_names_every_key_of_the_schema(built):
    text = man(built / "man" / "mailsyncd.yaml.5")
    keys = _schema_keys()
    assert {("", "domains"), ("", "notice"), ("web", "hostnames"), ('domains."example.com".source', "host")} <= keys
    renamed = {("frontdoor", old) for old in _FD_RENAMED}     # earlier names: in the prose, not set
    missing = sorted(f"{path}.{key}" if path else key for path, key in keys - renamed if f"{key}:" not in text)
    assert not missing, missing
    assert all(re.search(rf"\b{old}\b", text) for _, old in renamed), renamed
    top = [ln.strip() for ln in text.splitlines() if ln.startswith("   ") and not ln.startswith("    ")]
    for section in ("state_dir", "sync", "listen", "tls", "frontdoor", "scheduler", "web", "notice", "admin",
                    "dns", "domains"):
        assert section in top, (section, top)      # a subsection heading each


def test_bash_loads_the_completion_and_completes_commands(built):
    comp = built / "completion" / "bash" / "mailsyncctl"
    script = (f"source {comp} && complete -p mailsyncctl && "
              "COMP_WORDS=(mailsyncctl che) COMP_CWORD=1 && _shtab_mailsyncctl && echo \"${COMPREPLY[@]}\" && "
              "COMP_WORDS=(mailsyncctl status --so) COMP_CWORD=2 && _shtab_mailsyncctl && echo \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "_shtab_mailsyncctl" in lines[0] and lines[0].endswith(" mailsyncctl"), lines
    assert lines[1].split() == ["check-config"], lines
    assert "--sort" in lines[2].split(), lines
    assert (built / "completion" / "zsh" / "_mailsyncctl").read_text().startswith("#compdef mailsyncctl")
    assert (built / "completion" / "bash" / "mailsyncd").exists()


def test_readme_layout_has_one_row_per_package():
    """README's Layout table: each package of mailsyncd/ exactly once (a merge once left two rows for
    store/ and none for proxyproto/)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        layout = f.read().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(mailsyncd/[a-z_]+/)`", layout, re.M)
    top = os.path.join(REPO, "mailsyncd")
    packages = [f"mailsyncd/{d}/" for d in os.listdir(top) if os.path.isfile(os.path.join(top, d, "__init__.py"))]
    assert sorted(rows) == sorted(packages)


def test_docs_name_the_front_door_limits_by_their_current_keys():
    """The earlier names (ip_burst, ...) are still read, but the documentation names the current keys,
    except where it lists the earlier names as such."""
    docs = [os.path.join(REPO, "README.md"), REFERENCE] + [
        os.path.join(REPO, "docs", n) for n in os.listdir(os.path.join(REPO, "docs")) if n.endswith(".md")]
    old = re.compile(r"\b(" + "|".join(_FD_RENAMED) + r")\b")
    stale = []
    for path in docs:
        with open(path, encoding="utf-8") as f:
            stale += [f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}" for n, line in enumerate(f, 1)
                      if old.search(line) and "Earlier names" not in line]
    assert not stale, stale
