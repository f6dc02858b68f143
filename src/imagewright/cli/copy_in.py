"""``imagewright copy-in FILE IMAGE:/PATH`` (see ``cli.guestfiles``)."""

from __future__ import annotations

from imagewright.cli.guestfiles import copy_in_command as command

__all__ = ["command"]
