"""The policy that decides whether an image is safe to hand to any other tool.

NOTE: the dangers are the ones that made qemu-img a file-disclosure tool in the past
(CVE-2015-5162 style bombs, CVE-2022-47951 VMDK extents, CVE-2024-32498 qcow2 data-file):
an image that names another file makes a converter read that file — /etc/shadow, a device,
another tenant's volume — and copy it into an image the attacker downloads. So any
reference outside the image is refused, whatever it looks like; there is no "safe" path.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewright.formats.base import ExternalReference, Limits, OpenedImage
from imagewright.units import format_size


@dataclass(frozen=True)
class Verdict:
    """``safe`` or ``refused`` with every reason found (one sentence each)."""

    reasons: tuple[str, ...] = ()

    @property
    def safe(self) -> bool:
        return not self.reasons

    def __str__(self) -> str:
        return "safe" if self.safe else f"refused: {self.reasons[0]}"

    def to_dict(self) -> dict[str, object]:
        return {
            "safe": self.safe,
            "verdict": "safe" if self.safe else "refused",
            "reasons": list(self.reasons),
        }


SAFE = Verdict()


def describe_reference(ref: ExternalReference) -> str:
    """One sentence explaining why a reference to another file is refused."""
    what = {
        "backing-file": "a backing file",
        "data-file": "an external data file",
        "parent": "a parent image",
        "extent": "an extent in another file",
    }[ref.kind]
    detail = f" ({ref.detail})" if ref.detail else ""
    return f"the image names {what} '{ref.target}'{detail}; only self-contained images are accepted"


def judge(image: OpenedImage, limits: Limits) -> Verdict:
    """Every reason to refuse ``image``; an empty verdict means safe."""
    reasons: list[str] = [describe_reference(ref) for ref in image.references]
    reasons.extend(image.problems)
    if image.virtual_size > limits.max_virtual_size:
        reasons.append(
            f"the virtual size {format_size(image.virtual_size)} exceeds the limit of "
            f"{format_size(limits.max_virtual_size)}"
        )
    # Keep order, drop repeats (a parser may state a reference both ways).
    return Verdict(tuple(dict.fromkeys(reasons)))


def combine(*verdicts: Verdict) -> Verdict:
    reasons: list[str] = []
    for verdict in verdicts:
        reasons.extend(verdict.reasons)
    return Verdict(tuple(dict.fromkeys(reasons)))
