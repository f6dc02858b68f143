"""``OpenedImage.encryption``: every disk-format reader says whether the guest data is encrypted,
and how; qemu-img info's ``encrypted`` (its own reading of each format) agrees, and inspection
refuses exactly the encrypted ones with the method named (``inspection._unread_guest_reason``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.fixtures import hostile_encrypted
from tests.fixtures.hostile_other_formats import create_luks, create_luks_qcow2
from tests.fixtures.tools import qemu_img, qemu_img_info

from imagewright.binary import FileSource
from imagewright.formats import registry
from imagewright.formats.base import HEAD_SIZE, Limits
from imagewright.inspection import inspect_image

pytestmark = pytest.mark.integration

SECRET = ["--object", "secret,id=sec0,data=pw"]


def _created(fmt: str, *options: str) -> Callable[[Path], Path]:
    def create(directory: Path) -> Path:
        path = directory / f"disk.{fmt}"
        extra = [*SECRET, "-o", ",".join(options)] if options else []
        qemu_img("create", "-q", "-f", fmt, *extra, str(path), "16M")
        return path

    return create


#: (qemu-img's format name, how to make the image, the reader's expected ``encryption``).
IMAGES: list[tuple[str, Callable[[Path], Path], str | None]] = [
    ("qcow2", _created("qcow2"), None),
    ("qcow2", hostile_encrypted.qcow2_aes, "aes"),
    ("qcow2", lambda directory: create_luks_qcow2(directory / "disk.qcow2", "16M"), "luks"),
    ("qcow", _created("qcow"), None),
    ("qcow", _created("qcow", "encrypt.format=aes", "encrypt.key-secret=sec0"), "aes"),
    ("luks", lambda directory: create_luks(directory / "disk.luks", "4M"), "luks"),
    ("vmdk", _created("vmdk"), None),
    ("vhdx", _created("vhdx"), None),
    ("vpc", _created("vpc"), None),
    ("vdi", _created("vdi"), None),
    ("qed", _created("qed"), None),
    ("parallels", _created("parallels"), None),
    ("raw", _created("raw"), None),
]


@pytest.mark.parametrize(
    ("fmt", "create", "expected"),
    IMAGES,
    ids=[f"{fmt}-{expected or 'plain'}" for fmt, _, expected in IMAGES],
)
def test_every_reader_states_the_encryption_and_qemu_agrees(
    tmp_path: Path, fmt: str, create: Callable[[Path], Path], expected: str | None
) -> None:
    image = create(tmp_path)
    info = qemu_img_info(image)
    assert info["format"] == fmt
    with FileSource(image) as src:
        reader = registry.detect_disk_format(src, src.pread(0, HEAD_SIZE))
        assert reader.name == fmt
        opened = reader.module.open_image(src, Limits())
    assert opened.encryption == expected
    assert (opened.encryption is not None) == bool(info.get("encrypted", False))

    report = inspect_image(image)
    unread = f"its guest data is encrypted ({expected}), so what it holds could not be examined"
    if expected is None:
        assert report.safe, report.verdict.reasons
    else:
        assert unread in report.verdict.reasons
