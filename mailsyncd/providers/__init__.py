"""The old providers: presets (data), detection of a domain's server (MX, SRV, probe) and the
quirks that apply at run time.

``presets`` loads and checks ``presets.yaml``; ``steps`` is :func:`detect` and its three steps,
with ``dnsquery`` and ``probe`` the network parts it uses; ``autodetect`` turns detections into a
config's endpoints (``host: auto``); ``quirks`` reads a configured source's preset.  A new
provider is a new entry in ``presets.yaml``.
"""

from .presets import PRESETS_PATH, AppPassword, Preset, PresetError, Server, default_presets, load_presets, \
    match_mx, preset_for_host

# Detection needs dnspython (and the probe): loaded when first asked for, not by every user of
# the presets or quirks (mailsyncctl sync, the engine).
_LAZY = {**dict.fromkeys(("DEFAULT_PROBE_PORTS", "PROBE_PREFIXES", "ProbeError", "imap_probe", "make_probe"), "probe"),
         **dict.fromkeys(("SRV_SERVICES", "Detection", "DetectionFailed", "detect", "srv_tls_name"), "steps")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Server", "Preset", "AppPassword", "PresetError", "preset_for_host", "load_presets", "default_presets", "match_mx",
    "Detection", "DetectionFailed", "detect", "ProbeError", "imap_probe", "make_probe", "srv_tls_name",
    "DEFAULT_PROBE_PORTS", "PROBE_PREFIXES", "SRV_SERVICES", "PRESETS_PATH",
]
