"""Real context media made by imagewright's own builders, unpacked the way a guest sees them.

An ISO is unpacked with ``xorriso -osirrox`` (Rock Ridge names, as the Linux isofs driver shows
them); the Wakame FAT image with ``mcopy -s`` (long names, as the vfat driver shows them). The
agent then reads the directory through IMAGEWRIGHT_AGENT_MEDIA_DIR: this proves it reads what
the builders write, byte for byte, without mounting anything on the host.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.fixtures.tools import run, which

from imagewright.metadata.context import build_context_medium
from imagewright.metadata.instance import InstanceDescription

_MTOOLS_ENV = {"MTOOLSRC": "/dev/null", "MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}


def build_image(kind: str, instance: InstanceDescription, directory: Path) -> Path:
    suffix = "img" if kind == "wakame" else "iso"
    image = directory / f"{kind}-{instance.instance_id}.{suffix}"
    build_context_medium(kind, instance, image, force=True)
    return image


def extract(kind: str, image: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    if kind == "wakame":
        subprocess.run(
            [which("mcopy"), "-s", "-n", "-i", str(image), "::/*", str(destination) + "/"],
            env={**os.environ, **_MTOOLS_ENV},
            check=True,
            capture_output=True,
        )
    else:
        run("xorriso", "-osirrox", "on", "-indev", image, "-extract", "/", destination)
        # xorriso keeps the ISO's read-only modes; let pytest clean the tree up
        for path in [destination, *destination.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
    return destination


def medium_dir(kind: str, instance: InstanceDescription, directory: Path) -> Path:
    """Build the medium of ``kind`` and unpack it into a fresh directory."""
    image = build_image(kind, instance, directory)
    return extract(kind, image, directory / f"{kind}-{instance.instance_id}.d")
