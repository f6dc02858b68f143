"""recipe-files: the files a recipe copies into the target (``[[files]]``), in recipe order."""

from __future__ import annotations

from imagewright.errors import InvalidArgumentError
from imagewright.ops.build.distro.customizations.base import Customization, TargetScript
from imagewright.ops.build.distro.plan import DistroPlan

#: A recipe copies configuration, not payloads: larger files belong in a package.
MAX_FILE_BYTES = 16 << 20


def _customize(plan: DistroPlan, script: TargetScript) -> None:
    for item in plan.files:
        try:
            size = item.source.stat().st_size
            if size > MAX_FILE_BYTES:
                raise InvalidArgumentError(
                    f"{item.source} is {size} bytes; a recipe copies files of at most "
                    f"{MAX_FILE_BYTES >> 20} MiB (put larger ones in a package)."
                )
            data = item.source.read_bytes()
        except OSError as err:
            raise InvalidArgumentError(
                f"The recipe's file {item.source} cannot be read: {err.strerror}."
            ) from None
        script.write_bytes(
            item.destination, data, mode=item.mode,
            change=f"copied {item.source.name} to {item.destination} ({item.mode:04o})",
        )  # fmt: skip


CUSTOMIZATION = Customization(
    name="recipe-files",
    summary="the recipe's files, copied in",
    why="a recipe's configuration belongs in the image",
    applies=lambda plan: bool(plan.files),
    customize=_customize,
)
