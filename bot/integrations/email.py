"""Email to stakeholders over SMTP (aiosmtplib): the durable EMAIL jobs' sender.

`SMTP_URL` is `smtp://user:pass@host:587` (STARTTLS when the server offers it) or
`smtps://user:pass@host:465` (TLS from the first byte). Each message has a plain-text and an
HTML part, rendered from templates with autoescaping, and a Message-ID made from the job's
id: the job row is recorded before anything is sent. If the server's answer to a send is
lost (or the process dies before the outcome is recorded), the retry sends it again: SMTP
offers nothing stronger, so an email may arrive twice, with the same Message-ID (mail clients
thread such copies together). Once a send is recorded, it is never repeated.

A server that is down, slow or answers 4xx makes the job wait and retry (its own lane:
nothing else waits); a 5xx refusal (a recipient or the credentials refused) ends it.
"""

from __future__ import annotations

import email.utils
import logging
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, select_autoescape

from bot.domain.statuspage import STATE_LABELS
from bot.service.ports import JobFailed, JobRetry

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
_html = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True
)
_text = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=False, trim_blocks=True)  # noqa: S701 - plain text, never HTML


@dataclass(frozen=True)
class SmtpServer:
    """Where to send: parsed from SMTP_URL."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = None


def parse_smtp_url(url: str) -> SmtpServer:
    """`smtp://user:pass@host:587` or `smtps://host`; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("must start with smtp:// (STARTTLS when offered) or smtps:// (TLS)")
    if not parts.hostname:
        raise ValueError("names no host (smtp://user:pass@host:587)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number") from None
    implicit = parts.scheme == "smtps"
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if implicit else 587),
        implicit_tls=implicit,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def subject(payload: dict[str, Any]) -> str:
    """The subject line: the severity, then what happened, in public words unless the
    policy asked for the internal ones."""
    public = payload.get("public") or {}
    internal = payload.get("internal") or {}
    severity = str(payload.get("severity", ""))
    name = public.get("title") or internal.get("title") or payload.get("id", "")
    match payload.get("what"):
        case "declared":
            about = f": {internal['title']}" if internal.get("title") else ""
            line = f"[{severity}] Incident {payload.get('id')} declared{about}"
        case "resolved":
            line = f"[{severity}] Resolved: {name}"
        case _:
            status = str(public.get("status", "update")).capitalize()
            line = f"[{severity}] {status}: {name}"
    return _one_line(line)


def render(
    payload: dict[str, Any], *, job_id: int, sender: str, public_url: str | None
) -> EmailMessage:
    """The message for an EMAIL job's payload (`to`, `what`, `public`, `internal`…)."""
    at = _moment(payload.get("at"))
    public = payload.get("public") or None
    components = [
        (name, STATE_LABELS.get(str(state), str(state)))
        for name, state in ((public or {}).get("components") or {}).items()
    ]
    page = f"{public_url.rstrip('/')}/status" if public_url else None
    context = {
        "what": payload.get("what"),
        "id": payload.get("id"),
        "severity": payload.get("severity"),
        "at": f"{at:%Y-%m-%d %H:%M} UTC" if at else "",
        "public": public,
        "components": components,
        "internal": payload.get("internal") or None,
        "page": page,
        "subject": subject(payload),
    }
    message = EmailMessage()
    message["Subject"] = context["subject"]
    message["From"] = sender
    message["To"] = ", ".join(str(a) for a in payload.get("to") or [])
    message["Date"] = email.utils.format_datetime(at) if at else email.utils.formatdate()
    domain = sender.rpartition("@")[2].strip("> ") or "incident-bot.invalid"
    incident = str(payload.get("id", "incident")).lower()
    message["Message-ID"] = f"<{incident}.job{job_id}@{domain}>"
    message.set_content(_text.get_template("email.txt").render(context))
    message.add_alternative(_html.get_template("email.html").render(context), subtype="html")
    return message


class Mailer:
    """Sends an EMAIL job's message; JobRetry when the server is away, JobFailed when it
    refuses for good."""

    def __init__(
        self,
        *,
        url: str,
        sender: str,
        public_url: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.server = parse_smtp_url(url)
        self.sender = sender
        self.public_url = public_url
        self.timeout = timeout

    async def send(self, job_id: int, payload: dict[str, Any]) -> dict[str, Any]:
        message = render(payload, job_id=job_id, sender=self.sender, public_url=self.public_url)
        server = self.server
        try:
            refused, answer = await aiosmtplib.send(
                message,
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.implicit_tls,
                start_tls=False if server.implicit_tls else None,  # None: when offered
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise JobFailed(f"every recipient was refused ({_refusals(exc)})") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise JobFailed(f"the SMTP server refused the message ({exc.code})") from exc
            raise JobRetry(f"the SMTP server answered {exc.code}; trying again") from exc
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise JobRetry(f"SMTP server unreachable: {type(exc).__name__}") from exc
        result: dict[str, Any] = {
            "message_id": message["Message-ID"],
            "to": list(payload.get("to") or []),
            "answer": str(answer)[:200],
        }
        if refused:
            result["refused"] = sorted(refused)
            log.warning("email %s: refused for %s", message["Message-ID"], sorted(refused))
        return result


def _refusals(exc: aiosmtplib.SMTPRecipientsRefused) -> str:
    return ", ".join(f"{r.recipient}: {r.code}" for r in exc.recipients)[:300]
