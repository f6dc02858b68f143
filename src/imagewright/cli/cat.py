"""``imagewright cat IMAGE:/PATH`` (see ``cli.guestfiles``)."""

from __future__ import annotations

from imagewright.cli.guestfiles import cat_command as command

__all__ = ["command"]
