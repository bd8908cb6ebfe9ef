"""Provider quirks at run time: what a source endpoint's preset (presets.yaml) asks for.

The presets hold the quirks as data; this module is the one place that reads them for a configured
source (``Endpoint.preset``, set by ``source.preset``, the source's host or ``host: auto``), so no
other code branches on a provider's name.
"""

from __future__ import annotations

from .presets import AppPassword, Preset, PresetError, default_presets

APP_PASSWORD = "app_password"     # Verdict.hint: the source said "use the app password"


def preset_of(endpoint) -> Preset | None:
    key = getattr(endpoint, "preset", None)
    if key is None:
        return None
    try:
        return default_presets().get(key)
    except PresetError:
        return None         # the config check reports it; at run time: no quirks


def app_password(endpoint) -> tuple[Preset, AppPassword] | None:
    p = preset_of(endpoint)
    return (p, p.app_password) if p is not None and p.app_password is not None else None


def wants_app_password(endpoint, server_text: str) -> bool:
    """Did the source refuse a login with words that mean "use the app password"?"""
    found = app_password(endpoint)
    return bool(server_text) and found is not None and found[1].refusal_matches(server_text)


def skip_folders(endpoint) -> tuple[str, ...]:
    p = preset_of(endpoint)
    return p.skip_folders if p is not None else ()


def imap_refusal(endpoint) -> str:
    """The text after ``NO [AUTHENTICATIONFAILED]`` when the source asked for the app password.

    An IMAP client does not tell us its user's language: one short line in English and Chinese.
    """
    found = app_password(endpoint)
    if found is None:
        return "Authentication failed."
    p, ap = found
    url = f" ({ap.help_url})" if ap.help_url else ""
    return (f"{p.name} wants an {ap.name_en} ({ap.name_zh}), not the account password{url}. / "
            f"{p.name_zh}需要使用{ap.name_zh}登录，而不是邮箱密码。")


def web_refusal(endpoint, lang: str, template: str) -> str:
    """The self-service page's words: ``template`` (i18n) filled in, then the preset's how-to."""
    found = app_password(endpoint)
    if found is None:
        return ""
    p, ap = found
    text = template.format(provider=p.name_zh if lang == "zh" else p.name, name_en=ap.name_en,
                           name_zh=ap.name_zh)
    how = p.auth_hint_zh if lang == "zh" else p.auth_hint_en
    return f"{text} {how}" + (f" {ap.help_url}" if ap.help_url else "")
