"""The self-service page's words, in English and (Simplified) Chinese, and the choice between them.

The choice, first match wins: ``?lang=en|zh`` (the switch link, remembered in a cookie), a ``lang``
field of a posted form, the cookie, then ``Accept-Language`` by q-value (``zh``, ``zh-CN``, ``zh-TW``,
``zh-Hant``... read as Chinese), else English.
"""

from __future__ import annotations

LANGS = ("en", "zh")
DEFAULT = "en"
HTML_LANG = {"en": "en", "zh": "zh-Hans"}

# The label of each phase of mailsyncd.status (one word per phase), on every page: dashboard and self-service.
PHASE_LABELS: dict[str, dict[str, str]] = {
    "en": {"failed": "Failed", "syncing": "Syncing", "waiting": "Waiting for first login", "tailing": "In sync",
           "cutover": "Cut over"},
    "zh": {"failed": "失败", "syncing": "同步中", "waiting": "等待首次登录", "tailing": "已同步", "cutover": "已切换"},
}


def phase_words(lang: str) -> dict[str, str]:
    """``phase_<phase>`` keys for a page's word table."""
    return {f"phase_{p}": label for p, label in PHASE_LABELS.get(lang, PHASE_LABELS[DEFAULT]).items()}


MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Move your mailbox",
        "intro": "Sign in with your OLD email address and password. Your mail is then copied to the new "
                 "server, and you can follow the progress on the next page.",
        "old_address": "Old email address",
        "old_password": "Old password",
        "new_address": "New email address (optional)",
        "new_address_note": "Only if your address changes and your company allows it. "
                            "Leave empty to keep the same address.",
        "submit": "Start moving my mail",
        "privacy": "Your password is checked at the old mail server and kept encrypted until the move "
                   "is finished.",
        "switch": "中文",
        "err_credentials": "The email address or password is not correct.",
        # after the old server itself refused with its words for "use the app password" (presets.yaml)
        "err_app_password": "{provider} refused this password: it wants an {name_en} ({name_zh}) instead of "
                            "your normal password.",
        "err_unavailable": "The old mail server cannot be reached right now. Please try again later.",
        "err_throttled": "Too many attempts. Please wait a few minutes and try again.",
        "err_not_enabled": "Self-service migration is not enabled for your domain. "
                           "Please contact your IT department.",
        "err_rename": "A new address different from the old one is not allowed for your domain. "
                      "Leave the new address empty, or contact your IT department.",
        "err_rename_taken": "This new address cannot be chosen here. Please contact your IT department.",
        "err_cut_over": "The migration of your domain has already finished.",
        "err_missing": "Please enter your email address and password.",
        "err_csrf": "This form has expired. Please try again.",
        "err_internal": "Something went wrong on our side. Please try again later.",
        "err_generic": "The request could not be handled.",
        "not_found": "Page not found.",
        "back": "Back to the start page",
        "progress_title": "Your mailbox move",
        "mailbox": "Mailbox",
        "copied_from": "Copied from",
        "status": "Status",
        "counting": "Counting your mail…",
        "overall": "{done} of {total} messages on the new server",
        "overall_pass": "{done} of {total} messages checked in this run ({size} copied)",
        "skipped_count": "Messages that could not be copied: {n} (listed below).",
        "failed_note": "The last attempt did not succeed. It is retried automatically; "
                       "if this persists, please contact your IT department.",
        "folders": "Folders",
        "col_folder": "Folder",
        "col_old": "Old server",
        "col_new": "New server",
        "col_skipped": "Skipped",
        "col_state": "State",
        "folder_active": "copying now",
        "folder_ok": "done",
        "folder_error": "problem, will retry",
        "folder_waiting": "waiting",
        "no_folders": "No folders copied yet.",
        "skipped_title": "Messages that could not be copied",
        "col_size": "Size",
        "col_reason": "Reason",
        "skipped_more": "… and {n} more.",
        "last_pass": "Last complete run",
        "never": "not yet",
        "refresh_note": "This page refreshes every few seconds.",
        "logout": "Sign out",
        **phase_words("en"),
    },
    "zh": {
        "title": "迁移您的邮箱",
        "intro": "请使用您的旧邮箱地址和旧密码登录。随后您的邮件将被复制到新服务器，"
                 "您可以在下一页查看进度。",
        "old_address": "旧邮箱地址",
        "old_password": "旧邮箱密码",
        "new_address": "新邮箱地址（可选）",
        "new_address_note": "仅当您的地址变更且公司允许时填写。地址不变请留空。",
        "submit": "开始迁移我的邮件",
        "privacy": "您的密码将在旧邮件服务器上验证，并在迁移完成前加密保存。",
        "switch": "English",
        "err_credentials": "邮箱地址或密码不正确。",
        "err_app_password": "{provider}拒绝了这个密码：需要使用{name_zh}登录，而不是邮箱密码。",
        "err_unavailable": "暂时无法连接旧邮件服务器，请稍后再试。",
        "err_throttled": "尝试次数过多，请等待几分钟后再试。",
        "err_not_enabled": "您所在的域名未开放自助迁移，请联系 IT 部门。",
        "err_rename": "您所在的域名不允许使用与旧地址不同的新地址。请将新地址留空，或联系 IT 部门。",
        "err_rename_taken": "无法在此选择该新地址，请联系 IT 部门。",
        "err_cut_over": "您所在域名的迁移已经结束。",
        "err_missing": "请输入邮箱地址和密码。",
        "err_csrf": "表单已过期，请重试。",
        "err_internal": "服务器出现问题，请稍后再试。",
        "err_generic": "无法处理该请求。",
        "not_found": "页面不存在。",
        "back": "返回首页",
        "progress_title": "您的邮箱迁移",
        "mailbox": "邮箱",
        "copied_from": "复制自",
        "status": "状态",
        "counting": "正在统计您的邮件…",
        "overall": "新服务器上已有 {done} / {total} 封邮件",
        "overall_pass": "本轮已检查 {done} / {total} 封邮件（已复制 {size}）",
        "skipped_count": "有 {n} 封邮件无法复制（见下方）。",
        "failed_note": "上一次尝试未成功，系统会自动重试；如果问题持续，请联系 IT 部门。",
        "folders": "文件夹",
        "col_folder": "文件夹",
        "col_old": "旧服务器",
        "col_new": "新服务器",
        "col_skipped": "已跳过",
        "col_state": "状态",
        "folder_active": "正在复制",
        "folder_ok": "完成",
        "folder_error": "出现问题，将重试",
        "folder_waiting": "等待中",
        "no_folders": "尚未复制任何文件夹。",
        "skipped_title": "无法复制的邮件",
        "col_size": "大小",
        "col_reason": "原因",
        "skipped_more": "……还有 {n} 封。",
        "last_pass": "最近一次完整同步",
        "never": "尚未进行",
        "refresh_note": "本页每隔几秒自动刷新。",
        "logout": "退出",
        **phase_words("zh"),
    },
}

assert set(MESSAGES["en"]) == set(MESSAGES["zh"]), set(MESSAGES["en"]) ^ set(MESSAGES["zh"])


def t(lang: str, key: str, **kw) -> str:
    text = MESSAGES.get(lang, MESSAGES[DEFAULT])[key]
    return text.format(**kw) if kw else text


def normalize(value: str | bytes | None) -> str | None:
    """``en`` / ``zh`` (or a tag starting with one of them), else None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value:
        return None
    primary = value.strip().lower().replace("_", "-").split("-", 1)[0]
    return primary if primary in LANGS else None


def from_accept_language(header: str | bytes | None) -> str:
    """The best of our languages by the header's q-values; ties keep the header's order."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header:
        return DEFAULT
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header[:1000].split(",")[:50]):
        tag, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            name, _, val = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        lang = normalize(tag)
        if lang and q > 0:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else DEFAULT
