"""Checks shared by the qcow, qcow2 and VMDK reader tests, against the real qemu tools.

Each reader is held to what QEMU itself says and reads: ``qemu-img info`` for the format,
virtual size and backing file, and ``qemu-img convert -O raw`` for every guest byte.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType

from tests.fixtures.tools import qemu_img, qemu_img_info, run

from imagewright.binary import ByteSource, BytesSource, FileSource
from imagewright.errors import ImagewrightError
from imagewright.formats.base import HEAD_SIZE, Limits, OpenedImage
from imagewright.formats.safety import judge

MiB = 1024 * 1024


@contextmanager
def opened(module: ModuleType, path: Path, limits: Limits | None = None) -> Iterator[OpenedImage]:
    """Probe and open ``path`` with a format module; the file stays open inside the block."""
    with FileSource(path) as src:
        head = src.pread(0, HEAD_SIZE)
        assert module.probe(src, head), f"{module.__name__} does not recognise {path.name}"
        yield module.open_image(src, limits or Limits())


def qemu_io(path: Path, fmt: str, *commands: str) -> None:
    """Run several qemu-io commands against an image in one process."""
    args: list[str | Path] = ["qemu-io", "-f", fmt]
    for command in commands:
        args += ["-c", command]
    run(*args, path)


def raw_copy(path: Path, fmt: str, out: Path) -> Path:
    """What QEMU reads from the image, as a raw file."""
    qemu_img("convert", "-f", fmt, "-O", "raw", str(path), str(out))
    return out


def assert_matches_qemu_info(image: OpenedImage, path: Path, fmt: str) -> dict[str, object]:
    """Format, virtual size and backing file equal ``qemu-img info --output=json``."""
    info = qemu_img_info(path, fmt)
    assert image.format == info["format"]
    assert image.virtual_size == info["virtual-size"]
    assert image.backing_file == info.get("backing-filename")
    assert image.backing_format == info.get("backing-filename-format")
    json.dumps(dataclasses.asdict(image.details))
    return info


def pattern_commands(cluster: int, size: int) -> list[str]:
    """qemu-io writes at scattered places: cluster edges, unaligned spans, zeros, the last cluster."""
    return [
        "write -P 0x11 0 512",
        f"write -P 0x22 {cluster - 100} 300",
        f"write -P 0x33 {5 * cluster + 7} {3 * cluster}",
        f"write -P 0x44 {9 * cluster} {2 * cluster}",
        f"write -z {9 * cluster} {cluster}",
        f"write -P 0x66 {size // 2 + 4096} 12345",
        f"write -P 0x55 {size - cluster} {cluster}",
    ]


def pattern_ranges(cluster: int, size: int) -> list[tuple[int, int]]:
    """Guest ranges that cover every pattern written by ``pattern_commands`` and its edges."""
    return [
        (0, 4096),
        (cluster - 200, 600),
        (5 * cluster, 4 * cluster),
        (9 * cluster - 10, 2 * cluster + 20),
        (size // 2, 20000),
        (size - 2 * cluster, 2 * cluster),
        (size - 1, 1),
    ]


def assert_guest_matches_raw(
    guest: ByteSource,
    raw: Path,
    ranges: Sequence[tuple[int, int]] = (),
    random_reads: int = 48,
    seed: int = 7,
) -> None:
    """The guest view returns exactly QEMU's bytes over ``ranges`` and random ranges."""
    size = raw.stat().st_size
    assert guest.size == size
    rng = random.Random(seed)
    reads = list(ranges)
    reads += [(rng.randrange(size), rng.randrange(1, 3 * MiB)) for _ in range(random_reads)]
    with raw.open("rb") as f:
        for offset, length in reads:
            f.seek(offset)
            expected = f.read(length)
            actual = guest.pread(offset, length)
            assert actual == expected, f"guest bytes differ at {offset}+{length}"
    assert guest.pread(size, 10) == b""


def assert_guest_equals_raw_fully(guest: ByteSource, raw: Path, chunk: int = 4 * MiB) -> None:
    """Every guest byte equals QEMU's (for small images)."""
    size = raw.stat().st_size
    assert guest.size == size
    with raw.open("rb") as f:
        for offset in range(0, size, chunk):
            assert guest.pread(offset, chunk) == f.read(chunk), f"guest bytes differ in chunk at {offset}"


def assert_refused_with(image: OpenedImage, fragment: str) -> None:
    reasons = judge(image, Limits()).reasons
    assert any(fragment.lower() in reason.lower() for reason in reasons), reasons


def open_mutated(module: ModuleType, data: bytes, reads: Sequence[tuple[int, int]] = ()) -> None:
    """Open mutated image bytes and read its guest: only an ImagewrightError may escape."""
    src = BytesSource(data)
    try:
        image = module.open_image(src, Limits())
    except ImagewrightError:
        return
    judge(image, Limits())
    json.dumps(dataclasses.asdict(image.details))
    guest = image.guest
    if guest is None:
        return
    for offset, length in [(0, 65536), (max(0, guest.size - 4096), 8192), *reads]:
        with suppress(ImagewrightError):
            guest.pread(offset % max(1, guest.size), length)
