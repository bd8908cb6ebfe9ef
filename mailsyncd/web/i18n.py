"""All the web pages' words, in English and (Simplified) Chinese, and the choice between them.

``MESSAGES`` (:func:`t`) is the self-service page's, for employees; ``WORDS`` (:func:`w`) the dashboard's,
for the administrator: the same key may say different things to each.

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


# The dashboard's words for an account's newest-first stage and watch mode (status.py: stage, watching).
STAGE_LABELS: dict[str, dict[str, str]] = {
    "en": {"recent": "Recent mail", "rest": "Older mail", "done": "Done"},
    "zh": {"recent": "最近邮件", "rest": "较早邮件", "done": "完成"},
}
WATCH_LABELS: dict[str, dict[str, str]] = {
    "en": {"idle": "IDLE", "poll": "Polling", "off": "Off"},
    "zh": {"idle": "IDLE 实时", "poll": "轮询", "off": "关闭"},
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
        # recent mail first, the watch of new mail, its latency (status.py: stage, watching, new_mail_latency)
        "newest_first": "Newest mail first",
        "stage_recent": "Copying your most recent mail first",
        "stage_rest": "Your recent mail is here; older mail is being copied",
        "stage_done": "Done",
        "new_mail": "New mail sent to your old address",
        "watch_idle": "arrives here within seconds",
        "watch_poll": "is checked for every minute or so",
        "watch_off": "is copied at each sync run",
        "new_mail_latency": "Last new message copied in",
        "seconds": "{n} s",
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
        "newest_first": "最新邮件优先",
        "stage_recent": "正在优先复制您最近的邮件",
        "stage_rest": "最近的邮件已复制，正在复制较早的邮件",
        "stage_done": "已完成",
        "new_mail": "发到旧地址的新邮件",
        "watch_idle": "几秒内即可在此看到",
        "watch_poll": "大约每分钟检查一次",
        "watch_off": "在每次同步时复制",
        "new_mail_latency": "最近一封新邮件的复制用时",
        "seconds": "{n} 秒",
        "logout": "退出",
        **phase_words("zh"),
    },
}

assert set(MESSAGES["en"]) == set(MESSAGES["zh"]), set(MESSAGES["en"]) ^ set(MESSAGES["zh"])


# The dashboard's words (/admin): its own, as an administrator reads them.
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Mail migration",
        "overview": "Overview",
        "accounts": "Accounts",
        "report": "Report",
        "running_now": "running now",
        "switch": "中文",
        "sign_in": "Sign in",
        "sign_in_title": "Administrator sign-in",
        "user": "User",
        "password": "Password",
        "sign_out": "Sign out",
        "signed_out": "You are signed out.",
        "err_password": "Wrong password.",
        "err_missing": "Please enter the password.",
        "err_throttled": "Too many attempts. Please wait a few minutes and try again.",
        "err_csrf": "This form has expired. Please try again.",
        "err_internal": "Something went wrong. Please try again; the daemon's log has the details.",
        "err_generic": "The request could not be handled.",
        "not_found": "Not found.",
        "forbidden_title": "Dashboard: this machine only",
        "forbidden": "No administrator password is set, so the dashboard only answers browsers on the "
                     "daemon's own machine (127.0.0.1 or ::1).",
        "forbidden_how": "To use it from elsewhere, make a password hash on the server and put it in the "
                         "config, then reload the daemon:",
        "all_domains": "All domains",
        "no_domains": "No domains are configured.",
        "on_target": "{done} of {total} messages on the new server",
        "messages": "Messages",
        "skipped": "Skipped",
        "behind": "Still to copy",
        "rate": "Speed",
        "eta": "Time left",
        "per_min": "/min",
        "cutover": "Cutover",
        "throughput": "Throughput (messages per minute)",
        "collecting": "Collecting samples…",
        "needs_attention": "Failed accounts",
        "nodes": "Nodes",
        "node_name": "Node",
        "node_host": "Host",
        "node_heartbeat": "Last heartbeat",
        "node_leases": "Syncing now",
        "seconds_ago": "{n} s ago",
        "reload_failed": "The last reload failed",
        "reload_failed_how": "mailsyncd keeps running its previous configuration (generation {generation}). "
                             "Fix the file, check it with mailsyncctl check-config, then reload again.",
        "uptime": "Running for",
        "generation": "Configuration generation",
        "config_path": "Configuration file",
        "more_failed": "All failed accounts",
        "col_address": "Address",
        "col_phase": "Status",
        "col_progress": "Progress",
        "col_counts": "New / old",
        "col_last_pass": "Last pass",
        "col_actions": "",
        "search": "Search",
        "search_label": "Address contains",
        "domain_label": "Domain",
        "any_domain": "any",
        "phase_label": "Status",
        "any_phase": "any",
        "showing": "Showing {shown} of {total} accounts.",
        "in_address_order": "By address; failed accounts: choose their status.",
        "next_page": "Next page",
        "first_page": "First page",
        "bad_filter": "This filter cannot be used: {error}",
        "no_accounts": "No accounts match.",
        **phase_words("en"),
        "sync_now": "Sync now",
        "retry": "Retry",
        "account_title": "Account {address}",
        "copied_from": "Copied from",
        "plan": "Plan",
        "reason": "Reason",
        "current_folders": "Copying now",
        "last_pass": "Last pass",
        "next_pass": "Next pass",
        "stage": "Newest first",
        "watching": "Watching",
        "new_mail_latency": "New-mail latency",
        **{f"stage_{k}": v for k, v in STAGE_LABELS["en"].items()},
        **{f"watch_{k}": v for k, v in WATCH_LABELS["en"].items()},
        "folders": "Folders",
        "col_folder": "Folder",
        "col_target_name": "On the new server",
        "col_old": "Old",
        "col_new": "New",
        "col_copied": "Copied",
        "col_size": "Size",
        "col_seconds": "Time",
        "col_error": "Error",
        "col_when": "When",
        "col_reason": "Reason",
        "col_uid": "UID",
        "col_result": "Result",
        "no_folders": "No folder report yet.",
        "skipped_title": "Skipped messages",
        "skipped_more": "Showing the first {shown} of {total}.",
        "no_skipped": "None.",
        "passes": "Recent passes",
        "no_passes": "No pass yet.",
        "pass_ok": "ok",
        "pass_failed": "failed",
        "pass_running": "running",
        "errors": "Errors",
        "no_errors": "None.",
        "never": "never",
        "none": "—",
        "cut_none": "Not scheduled",
        "cut_scheduled": "Scheduled for {at}",
        "cut_cancelled": "Cancelled (the config's time is ignored)",
        "cut_final_pass": "Final pass running",
        "cut_done": "Done {at}",
        "postpone": "Postpone by",
        "schedule_in": "Schedule in",
        "hours_1": "1 hour", "hours_6": "6 hours", "hours_24": "1 day", "hours_72": "3 days",
        "hours_168": "1 week",
        "or_at": "or at (ISO 8601 with zone)",
        "apply": "Apply",
        "cutover_now": "Run cutover now",
        "cutover_confirm": "I understand: after a final pass, syncing stops and the stored old passwords "
                           "are destroyed.",
        "cancel_cutover": "Cancel cutover",
        "done_sync_now": "Sync requested for {target}.",
        "done_retry": "Retry requested for {target}.",
        "done_postpone": "Cutover of {target} scheduled for {at}.",
        "done_cutover_now": "Cutover of {target} starts now (final pass first).",
        "done_cancel_cutover": "Cutover of {target} cancelled.",
        "refused_not_scheduled": "{target} is not in the scheduler (unknown, cut over, or removed).",
        "refused_cut_state": "The cutover of {target} is already {state}; it cannot be changed now.",
        "refused_confirm": "Please tick the box to confirm.",
        "refused_bad_time": "Not a time: give an ISO 8601 time with its zone, e.g. 2026-12-31T18:00+08:00.",
        "refused_past": "That time is in the past; use “Run cutover now” instead.",
        "refused_unknown": "Unknown domain or action.",
        "live": "Live",
        "updated": "updated {time}",
        "stale": "Connection lost; retrying…",
        "expired": "Session ended: reload the page to sign in again.",
        "h": "h", "min": "min", "s": "s", "d": "d",
        "ago": "{t} ago",
    },
    "zh": {
        "title": "邮件迁移",
        "overview": "概览",
        "accounts": "账户",
        "report": "迁移报告",
        "running_now": "正在进行",
        "switch": "English",
        "sign_in": "登录",
        "sign_in_title": "管理员登录",
        "user": "用户",
        "password": "密码",
        "sign_out": "退出",
        "signed_out": "您已退出。",
        "err_password": "密码错误。",
        "err_missing": "请输入密码。",
        "err_throttled": "尝试次数过多，请等待几分钟后再试。",
        "err_csrf": "表单已过期，请重试。",
        "err_internal": "出现错误，请重试；详情见守护进程日志。",
        "err_generic": "无法处理该请求。",
        "not_found": "未找到。",
        "forbidden_title": "管理面板：仅限本机",
        "forbidden": "尚未设置管理员密码，因此管理面板只接受守护进程所在机器上的浏览器（127.0.0.1 或 ::1）。",
        "forbidden_how": "如需从其他地方访问，请在服务器上生成密码哈希并写入配置，然后重新加载守护进程：",
        "all_domains": "全部域名",
        "no_domains": "未配置任何域名。",
        "on_target": "新服务器上已有 {done} / {total} 封邮件",
        "messages": "邮件",
        "skipped": "已跳过",
        "behind": "待复制",
        "rate": "速度",
        "eta": "剩余时间",
        "per_min": "/分钟",
        "cutover": "切换",
        "throughput": "吞吐量（每分钟邮件数）",
        "collecting": "正在收集数据…",
        "needs_attention": "失败的账户",
        "nodes": "节点",
        "node_name": "节点",
        "node_host": "主机",
        "node_heartbeat": "最近心跳",
        "node_leases": "正在同步",
        "seconds_ago": "{n} 秒前",
        "reload_failed": "上次重新加载配置失败",
        "reload_failed_how": "mailsyncd 继续使用之前的配置（第 {generation} 代）运行。"
                             "请修正配置文件，用 mailsyncctl check-config 检查后再重新加载。",
        "uptime": "已运行",
        "generation": "配置代数",
        "config_path": "配置文件",
        "more_failed": "所有失败的账户",
        "col_address": "地址",
        "col_phase": "状态",
        "col_progress": "进度",
        "col_counts": "新 / 旧",
        "col_last_pass": "最近一轮",
        "col_actions": "",
        "search": "搜索",
        "search_label": "地址包含",
        "domain_label": "域名",
        "any_domain": "全部",
        "phase_label": "状态",
        "any_phase": "全部",
        "showing": "显示 {shown} / {total} 个账户。",
        "in_address_order": "按地址排序；查看失败的账户请选择其状态。",
        "next_page": "下一页",
        "first_page": "第一页",
        "bad_filter": "无法使用此筛选条件：{error}",
        "no_accounts": "没有匹配的账户。",
        **phase_words("zh"),
        "sync_now": "立即同步",
        "retry": "重试",
        "account_title": "账户 {address}",
        "copied_from": "复制自",
        "plan": "方案",
        "reason": "原因",
        "current_folders": "正在复制",
        "last_pass": "最近一轮",
        "next_pass": "下一轮",
        "stage": "最新优先",
        "watching": "新邮件监听",
        "new_mail_latency": "新邮件延迟",
        **{f"stage_{k}": v for k, v in STAGE_LABELS["zh"].items()},
        **{f"watch_{k}": v for k, v in WATCH_LABELS["zh"].items()},
        "folders": "文件夹",
        "col_folder": "文件夹",
        "col_target_name": "新服务器上",
        "col_old": "旧",
        "col_new": "新",
        "col_copied": "已复制",
        "col_size": "大小",
        "col_seconds": "耗时",
        "col_error": "错误",
        "col_when": "时间",
        "col_reason": "原因",
        "col_uid": "UID",
        "col_result": "结果",
        "no_folders": "尚无文件夹报告。",
        "skipped_title": "已跳过的邮件",
        "skipped_more": "显示前 {shown} 封，共 {total} 封。",
        "no_skipped": "无。",
        "passes": "最近几轮同步",
        "no_passes": "尚未同步。",
        "pass_ok": "成功",
        "pass_failed": "失败",
        "pass_running": "进行中",
        "errors": "错误",
        "no_errors": "无。",
        "never": "从未",
        "none": "—",
        "cut_none": "未安排",
        "cut_scheduled": "计划于 {at}",
        "cut_cancelled": "已取消（忽略配置中的时间）",
        "cut_final_pass": "正在进行最后一轮同步",
        "cut_done": "已于 {at} 完成",
        "postpone": "推迟",
        "schedule_in": "安排在",
        "hours_1": "1 小时", "hours_6": "6 小时", "hours_24": "1 天", "hours_72": "3 天",
        "hours_168": "1 周",
        "or_at": "或指定时间（ISO 8601，含时区）",
        "apply": "应用",
        "cutover_now": "立即切换",
        "cutover_confirm": "我已了解：最后一轮同步之后将停止同步，并销毁保存的旧密码。",
        "cancel_cutover": "取消切换",
        "done_sync_now": "已请求同步 {target}。",
        "done_retry": "已请求重试 {target}。",
        "done_postpone": "{target} 的切换已安排在 {at}。",
        "done_cutover_now": "{target} 的切换现在开始（先进行最后一轮同步）。",
        "done_cancel_cutover": "已取消 {target} 的切换。",
        "refused_not_scheduled": "{target} 不在调度器中（未知、已切换或已删除）。",
        "refused_cut_state": "{target} 的切换已处于“{state}”状态，现在无法更改。",
        "refused_confirm": "请勾选确认框。",
        "refused_bad_time": "时间格式无效：请使用含时区的 ISO 8601 时间，例如 2026-12-31T18:00+08:00。",
        "refused_past": "该时间已过去；请使用“立即切换”。",
        "refused_unknown": "未知的域名或操作。",
        "live": "实时",
        "updated": "更新于 {time}",
        "stale": "连接中断，正在重试…",
        "expired": "会话已结束：请刷新页面重新登录。",
        "h": "小时", "min": "分钟", "s": "秒", "d": "天",
        "ago": "{t}前",
    },
}

assert set(WORDS["en"]) == set(WORDS["zh"]), set(WORDS["en"]) ^ set(WORDS["zh"])


def _word(table: dict[str, dict[str, str]], lang: str, key: str, kw: dict) -> str:
    text = table.get(lang, table[DEFAULT])[key]
    return text.format(**kw) if kw else text


def t(lang: str, key: str, **kw) -> str:
    """A word of the self-service page (MESSAGES)."""
    return _word(MESSAGES, lang, key, kw)


def w(lang: str, key: str, **kw) -> str:
    """A word of the dashboard (WORDS)."""
    return _word(WORDS, lang, key, kw)


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
