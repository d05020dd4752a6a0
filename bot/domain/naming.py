"""Incident ids and channel names (README, "Names"). Pure."""

from __future__ import annotations

import re
import unicodedata
from datetime import date

CHANNEL_NAME_MAX = 80


def incident_id(day: date, seq: int) -> str:
    """`INC-YYYYMMDD-NNN`: the UTC date and the day's sequence (more digits past 999)."""
    return f"INC-{day:%Y%m%d}-{seq:03d}"


def is_incident_id(text: str) -> bool:
    """Whether `text` has the shape of an incident id (ids from buttons and forms are checked
    before any look-up: a forged one may hold anything)."""
    return re.fullmatch(r"INC-[0-9]{8}-[0-9]{3,9}", text) is not None


def slugify(title: str) -> str:
    """Lowercase `a-z0-9-` words of the title; empty when nothing usable remains."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")


def channel_name(incident: str, title: str, *, attempt: int = 0, drill: bool = False) -> str:
    """`inc-YYYYMMDD-NNN-<slug>` within 80 characters; `attempt` > 0 adds `-2`, `-3`, … .

    The slug is cut at a word boundary when it can be, so that the whole name, suffix
    included, stays within Slack's limit.
    """
    base = incident.lower()
    if drill:
        base = f"{base}-drill"
    suffix = f"-{attempt + 1}" if attempt else ""
    room = CHANNEL_NAME_MAX - len(base) - len(suffix) - 1
    slug = slugify(title)
    if len(slug) > room:
        cut = slug[:room]
        slug = cut.rsplit("-", 1)[0] if "-" in cut and slug[room] != "-" else cut
        slug = slug.strip("-")
    return f"{base}-{slug}{suffix}" if slug else f"{base}{suffix}"
