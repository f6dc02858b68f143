"""Problems and notes are one sentence each: lower-case start, no final period."""

from __future__ import annotations


def as_problem(message: object) -> str:
    """Turn an error message (``"The xz index is truncated."``) into a problem sentence.

    Acronyms keep their case ("OVF descriptor ..."): only a capital followed by a lower-case
    letter is lowered.
    """
    text = str(message).strip().rstrip(".")
    if len(text) >= 2 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


class Findings:
    """Problems and notes collected while reading, with a cap per category.

    A hostile archive can repeat one fault 200 000 times; the report names the first few
    of each category and then counts the rest, so its size stays bounded.
    """

    def __init__(self, per_category: int = 20) -> None:
        self.problems: list[str] = []
        self.notes: list[str] = []
        self._per_category = per_category
        self._counts: dict[tuple[bool, str], int] = {}

    def _add(self, is_problem: bool, category: str, text: str) -> None:
        key = (is_problem, category)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        if count <= self._per_category:
            (self.problems if is_problem else self.notes).append(as_problem(text))

    def problem(self, text: object, category: str | None = None) -> None:
        self._add(True, category or str(text), str(text))

    def note(self, text: object, category: str | None = None) -> None:
        self._add(False, category or str(text), str(text))

    def extend(self, other: Findings) -> None:
        """Take over another collector's sentences (already capped there)."""
        self.problems.extend(other.problems)
        self.notes.extend(other.notes)

    def finish(self) -> None:
        """Append one sentence per category that was cut short."""
        for (is_problem, category), count in self._counts.items():
            extra = count - self._per_category
            if extra > 0:
                sentence = f"{extra} more of the same kind ({category})"
                (self.problems if is_problem else self.notes).append(sentence)
        self._counts.clear()
