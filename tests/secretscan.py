"""Look for passwords in every file a test run left behind, and say which files were read."""

from __future__ import annotations

import os


def assert_no_secrets(root, secrets: list[str], *, skip_dirs=("source", "target"),
                      skip_names=("master.secret",), must_scan=(), encodings=("utf-8",)) -> list[str]:
    """Assert that no file under ``root`` holds any of ``secrets``; return the files read (relative paths).

    ``skip_dirs``: the Dovecot servers' own directories (their passwd-file holds the passwords by design).
    ``must_scan``: relative paths that must be among the files read, so that an empty or moved
    directory cannot make the check pass by reading nothing.
    """
    assert secrets and all(secrets), "nothing to look for"
    scanned: list[str] = []
    found: list[str] = []
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip_dirs]
        for name in files:
            if name in skip_names or name.endswith(".pem"):
                continue
            path = os.path.join(top, name)
            with open(path, "rb") as f:
                data = f.read()
            rel = os.path.relpath(path, root)
            scanned.append(rel)
            found += [f"{s!r} ({enc}) in {rel}" for s in secrets for enc in encodings if s.encode(enc) in data]
    assert not found, found
    missing = set(must_scan) - set(scanned)
    assert not missing, f"not scanned: {sorted(missing)}; scanned: {sorted(scanned)}"
    return scanned
