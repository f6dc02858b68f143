"""The decisions of one distribution build, made before mmdebstrap starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imagewright.ops.build.distro.release import Release
from imagewright.ops.build.distro.sources import Sources

#: What the image uses to take in the instance's data at first boot.
CONTEXTS = ("agent", "cloud-init", "none")


@dataclass(frozen=True)
class FileToCopy:
    """A host file a recipe copies into the target."""

    source: Path
    destination: str
    mode: int = 0o644


@dataclass(frozen=True)
class DistroPlan:
    release: Release
    #: mmdebstrap variant: minbase, important or standard.
    variant: str
    #: The user's extra packages (``--packages``).
    packages: tuple[str, ...]
    #: agent, cloud-init or none.
    context: str
    #: cloud or generic.
    kernel_flavour: str
    sources: Sources
    #: SOURCE_DATE_EPOCH of the build (None: not reproducible, mtimes are "now").
    source_date_epoch: int | None
    #: Files and commands of a recipe, in recipe order.
    files: tuple[FileToCopy, ...] = ()
    commands: tuple[str, ...] = ()
    #: Kernel parameters beyond root= and the consoles (``--append``).
    append: str = ""
    #: What the disk boots under: bios, uefi or hybrid (layout.resolve_shape's answer).
    firmware: str = "hybrid"

    @property
    def uefi(self) -> bool:
        return self.firmware in ("uefi", "hybrid")

    notes: list[str] = field(default_factory=list)

    @property
    def kernel_package(self) -> str:
        return self.release.kernel_package(self.kernel_flavour)
