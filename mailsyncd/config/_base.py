"""What every section parser shares: the error list with key paths, the mapping reader with
"did you mean", and the value checkers.

Validation collects every problem before failing, so an operator fixes the whole file in one
pass instead of one error per restart.  Each message starts with the key path
(``domains."example.com".source.port``) so it can be found in the file.
"""

import difflib
import os
import re


class ConfigError(Exception):
    """The config is unusable; ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class UnknownDomain(LookupError):
    def __init__(self, domain: str, known: list[str]):
        self.domain, self.known = domain, known
        super().__init__(f"no domain {domain!r} in config (known: {', '.join(known)})")


def _split_address(address: object) -> tuple[str, str]:
    # Split at the *last* "@": a quoted local part may itself contain "@".
    if isinstance(address, str):
        local, at, domain = address.rpartition("@")
        if at and local and domain:
            return local, domain
    raise ValueError(f"not an email address: {address!r}")



class _Invalid(Exception):
    """Raised by a value checker; the message says what the value must be."""


class _Errors(list):
    def add(self, path: str, msg: str) -> None:
        self.append(f"{path}: {msg}")


def _join(path: str, key: object) -> str:
    # Quote keys that are not plain identifiers so that "example.com" does not
    # read as two levels of nesting.
    k = key if isinstance(key, str) and re.fullmatch(r"[A-Za-z_]\w*", key) else f'"{key}"'
    return f"{path}.{k}" if path else k


def _got(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_REQUIRED = object()


class _Section:
    """One YAML mapping being read. Getters record errors and fall back to the
    default, so validation goes on and every problem gets reported."""

    def __init__(self, errs: _Errors, node: object, path: str, allowed):
        self.errs, self.path = errs, path
        if node is None:  # "folders:" with nothing under it means "all defaults"
            node = {}
        if not isinstance(node, dict):
            errs.add(path, f"must be a mapping (got {_got(node)})")
            node = {}
        self.node = node
        for key in node:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
                errs.add(_join(path, key), f"unknown key ({hint})")

    def has(self, key: str) -> bool:
        return key in self.node

    def get(self, key: str, check, default=_REQUIRED):
        if key not in self.node:
            if default is _REQUIRED:
                self.errs.add(_join(self.path, key), "required key is missing")
                return None
            return default
        value = self.node[key]
        try:
            return check(value)
        except _Invalid as e:
            self.errs.add(_join(self.path, key), f"{e} (got {_got(value)})")
            return None if default is _REQUIRED else default


# Value checkers: take the raw YAML value, return the converted one or raise _Invalid.

def _choice(*options: str, msg: str | None = None):
    def check(v):
        if v not in options:
            raise _Invalid(msg or "must be one of " + ", ".join(map(repr, options)))
        return v
    return check


def _int_range(lo: int, hi: int):
    def check(v):
        # bool is an int subclass; "port: yes" is surely a mistake.
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Invalid(f"must be an integer {lo}-{hi}")
        return v
    return check


def _positive(hi: float | None = None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                or (hi is not None and v > hi):
            raise _Invalid("must be a number > 0" + (f" and <= {hi:g}" if hi else ""))
        return float(v)
    return check


def _boolean(v):
    if not isinstance(v, bool):
        raise _Invalid("must be true or false")
    return v


def _text(v):
    if not isinstance(v, str) or not v.strip():
        raise _Invalid("must be a non-empty string")
    return v


def _hostname(v):
    if not isinstance(v, str) or not v or re.search(r"[\s/@]", v):
        raise _Invalid("must be a host name or IP address")
    return v


def _template(v):
    try:
        _text(v).format(address="u@d", local="u", domain="d")
    except (_Invalid, KeyError, IndexError, ValueError, AttributeError):
        raise _Invalid("must be a login-name template using only {address}, {local}, {domain}") from None
    return v


def _str_list(v):
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise _Invalid("must be a list of non-empty strings")
    return tuple(v)


def _file(base_dir: str):
    def check(v):
        raw = _text(v)
        if "$CREDENTIALS_DIRECTORY" in raw or "${CREDENTIALS_DIRECTORY}" in raw:
            # systemd's LoadCredential= hands secrets to a DynamicUser service under this directory
            if not os.environ.get("CREDENTIALS_DIRECTORY"):
                raise _Invalid("uses $CREDENTIALS_DIRECTORY, which only the systemd service has "
                               "(LoadCredential=); outside it, check with: systemd-run -P "
                               "-p LoadCredential=... mailsyncctl check-config")
            raw = raw.replace("${CREDENTIALS_DIRECTORY}", os.environ["CREDENTIALS_DIRECTORY"]).replace(
                "$CREDENTIALS_DIRECTORY", os.environ["CREDENTIALS_DIRECTORY"])
        p = os.path.normpath(os.path.join(base_dir, raw))
        if not os.path.isfile(p):
            raise _Invalid(f"file does not exist: {p}")
        if not os.access(p, os.R_OK):
            raise _Invalid(f"file is not readable: {p}")
        return p
    return check


