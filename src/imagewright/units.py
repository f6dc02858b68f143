"""Sizes as people write them ("4G", "512M", "+1GiB") and as we print them."""

from __future__ import annotations

import re

from imagewright.errors import InvalidArgumentError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "p": 1024**5,
    "s": 512,  # sectors, as sfdisk and qemu-img understand them
}

#: A pattern, not a compiled one: ``re`` compiles (and caches) it on first use, so a
#: command that parses no size does not pay for it at start-up.
_SIZE_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpsb]?)(?:i?b)?\s*$"


def parse_size(text: str) -> int:
    """Parse ``"4G"``, ``"512MiB"``, ``"1.5g"``, ``"2048s"`` or plain bytes; binary units.

    Raises InvalidArgumentError with one sentence for anything else.
    """
    match = re.match(_SIZE_PATTERN, text, re.IGNORECASE)
    if not match:
        raise InvalidArgumentError(
            f"'{text}' is not a size; write a number with an optional unit such as 512M, 4G or 1T."
        )
    number, unit = match.groups()
    value = float(number) * _UNITS[unit.lower()]
    if value != int(value):
        raise InvalidArgumentError(f"'{text}' is not a whole number of bytes.")
    return int(value)


def parse_size_change(text: str) -> tuple[str, int]:
    """Parse a resize argument: ``"+1G"`` (grow by), ``"-1G"`` (shrink by) or ``"8G"`` (absolute).

    Returns ("+", n), ("-", n) or ("=", n).
    """
    stripped = text.strip()
    if stripped[:1] in ("+", "-"):
        return stripped[0], parse_size(stripped[1:])
    return "=", parse_size(stripped)


def format_size(n: int) -> str:
    """``1073741824`` → ``'1 GiB'``; ``1536`` → ``'1.5 KiB'``; exact values stay short."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    raise AssertionError("unreachable")
