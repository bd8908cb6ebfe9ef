"""The optional "your mail has been moved" notice, appended once to the user's new INBOX.

Exactly once, even across crashes: the message has a Message-ID derived from the
address, and the target INBOX is searched for it before the APPEND; the store
marks it sent afterwards.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import time
from email.message import EmailMessage

from .net import imap

logger = logging.getLogger("mailsyncd.notice")


def message_id(address: str) -> str:
    return f"<notice.{hashlib.sha256(address.encode()).hexdigest()[:24]}@mailsyncd.invalid>"


def compose(address: str, *, sender: str, messages: int, folders: int, skipped: list[tuple[str, int, int, str]],
            now: float | None = None) -> bytes:
    """The notice, in English and Chinese: counts, and anything skipped with the reason."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = address
    msg["Subject"] = "Your mail has been moved / 您的邮件已迁移完成"
    msg["Date"] = email.utils.formatdate(now if now is not None else time.time(), localtime=True)
    msg["Message-ID"] = message_id(address)
    lines = [
        "Your mailbox has been moved to the new server.",
        f"{messages:,} messages in {folders} folders are here now, with their folders, flags and dates.",
        "New mail to your old address keeps arriving here until the migration ends.",
        "",
        "您的邮箱已迁移到新服务器。",
        f"共 {messages:,} 封邮件、{folders} 个文件夹已迁移，文件夹、标记和日期均保持不变。",
        "迁移结束前，发往旧地址的新邮件仍会继续同步到这里。",
    ]
    if skipped:
        lines += ["", f"{len(skipped)} message(s) could not be copied / 以下 {len(skipped)} 封邮件未能迁移:"]
        for path, uid, size, reason in skipped[:50]:
            lines.append(f"  - {path} #{uid} ({size or 0:,} bytes): {reason}")
        if len(skipped) > 50:
            lines.append(f"  ... and {len(skipped) - 50} more / 以及另外 {len(skipped) - 50} 封")
    msg.set_content("\n".join(lines) + "\n", charset="utf-8")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def deliver(domain, address: str, password: str | None, store, *, sender: str) -> bool:
    """Append the notice unless it is there already; True if this call appended it."""
    if store.notice_sent(address):
        return False
    reports = store.reports(address)
    messages = sum((r.copied or 0) + (r.present or 0) for r in reports)
    raw = compose(address, sender=sender, messages=messages, folders=len(reports), skipped=store.skipped(address))
    client = imap.open_session(domain.target, role="target", address=address, password=password)
    try:
        client.select_folder("INBOX")
        already = client.search(["HEADER", "Message-ID", message_id(address)])
        if not already:
            client.append("INBOX", raw)
        client.logout()
    finally:
        imap.close(client)
    store.mark_notice_sent(address)
    logger.info("event=notice_appended account=%s messages=%d skipped=%d%s", address, messages,
                len(store.skipped(address)), " (found from an earlier attempt)" if already else "")
    return not already
