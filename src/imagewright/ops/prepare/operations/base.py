"""What an operation is: a name, whether it is in the default set (and why), and a function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagewright.ops.prepare.context import PrepareContext


@dataclass(frozen=True)
class Operation:
    name: str
    #: In the default set (the safe set: nothing a user needs to log in or that holds their data).
    default: bool
    #: One line for ``--list-operations``.
    summary: str
    #: Why it is in or out of the default set.
    why: str
    run: Callable[[PrepareContext], None]
    #: The option that switches it on (``--dns``, ``--module``, ``--agent``); None if none.
    needs: str | None = None

    @property
    def default_text(self) -> str:
        if self.needs:
            return f"with {self.needs}"
        return "yes" if self.default else "no"
