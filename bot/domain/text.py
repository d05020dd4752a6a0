"""Typed text made safe to keep and to show. Pure."""

from __future__ import annotations

# C0 and C1 control characters but the tab and the line feed; CR is a line break (below).
_CONTROLS: dict[int, str | None] = {
    c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]
}
_CONTROLS[0x0D] = "\n"


def strip_controls(text: str) -> str:
    """Text without control characters (NUL, ESC, BEL…; newlines and tabs kept, CR LF and CR
    read as newlines): they show as nothing in Slack, and PostgreSQL refuses NUL in text."""
    return text.replace("\r\n", "\n").translate(_CONTROLS)


def joined(parts: list[str]) -> str:
    """ "a", "a and b", "a, b and c": a list as a sentence says it (empty: "")."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
