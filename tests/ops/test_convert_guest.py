"""convert reads a qcow2 itself for a raw output (``ops.convert.guest_reader``), and takes the
digests computed while the file arrived (``hash_guest``, ``convert(prehashed=...)``) — and the
raw output written in that same pass (``hash_guest(output=...)``), taken by convert only where
the digests are.

Every qcow2 variant qemu-img writes — versions 2 and 3, 512-byte and 2 MiB clusters, zlib and
zstd compressed clusters, zero clusters, extended L2 entries with half-written subclusters,
preallocated metadata, data written out of guest order, a size that is no multiple of the
cluster — converted by imagewright's reader is checked against qemu-img (``qemu-img compare``,
and the raw file qemu-img makes of it, byte for byte), and its digests against sha256sum of
the output. Prehashed digests are used only for the very file they were computed of.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import threading
from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img, run, sparse_file

from imagewright import direct_io
from imagewright.binary import FileSource, GrowingFile
from imagewright.errors import ImageIOError
from imagewright.formats import qcow2
from imagewright.formats.base import Limits
from imagewright.formats.mapped_guest import MappedGuestSource
from imagewright.ops.convert import GuestHashing, convert, guest_reader, hash_guest, output

MiB = 1 << 20
KiB = 1 << 10
SIZE = 24 * MiB + 3 * 512  # not a multiple of any cluster size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _qemu_io(path: Path, *commands: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        argv += ["-c", command]
    run(*argv, path)


def _source_raw(path: Path) -> Path:
    """Random data, a repeating pattern, zeros written as data, and holes."""
    sparse_file(path, SIZE)
    with path.open("r+b") as f:
        f.write(os.urandom(3 * MiB + 777))
        f.seek(5 * MiB + 512)
        f.write(hashlib.sha256(b"pattern").digest() * (2 * MiB // 32))
        f.seek(9 * MiB)
        f.write(bytes(MiB))
        f.seek(SIZE - 4096)
        f.write(os.urandom(4096))
    return path


VARIANTS = {
    "v3": ["-o", "compat=1.1"],
    "v2": ["-o", "compat=0.10"],
    "cluster-512": ["-o", "cluster_size=512"],
    "cluster-2M": ["-o", "cluster_size=2M"],
    "compressed-zlib": ["-c"],
    "compressed-zstd": ["-c", "-o", "compression_type=zstd"],
    "extended-l2": ["-o", "extended_l2=on,cluster_size=128K"],
    "preallocated-metadata": ["-o", "preallocation=metadata"],
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guest-reader")
    raw = _source_raw(root / "source.raw")
    found: dict[str, Path] = {}
    for name, options in VARIANTS.items():
        path = root / f"{name}.qcow2"
        if name == "preallocated-metadata":
            qemu_img("create", "-f", "qcow2", *options, path, str(SIZE))
            qemu_img("convert", "-n", "-f", "raw", "-O", "qcow2", raw, path)
        else:
            qemu_img("convert", "-f", "raw", "-O", "qcow2", *options, raw, path)
        found[name] = path
    # Subclusters half written, zero clusters, and clusters allocated in reverse guest order.
    extended = found["extended-l2"]
    _qemu_io(extended, "write -P 0x5a 1M 6K", "write -z 2M 128K", "write -P 0x11 4M 2K")
    scattered = root / "scattered.qcow2"
    qemu_img("create", "-f", "qcow2", scattered, str(SIZE))
    _qemu_io(
        scattered,
        *(f"write -P {0x20 + i} {(20 - 2 * i) * MiB} 192K" for i in range(8)),
        "write -z 6M 1M",
        "write -P 0x77 6M 64K",
        f"write -P 0x99 {SIZE - 512} 512",
    )
    found["scattered"] = scattered
    zeroed = root / "zero-clusters.qcow2"
    shutil.copy(found["v3"], zeroed)
    _qemu_io(zeroed, "write -z 0 1M", "write -z -u 5M 2M")
    found["zero-clusters"] = zeroed
    return found


@pytest.mark.integration
@pytest.mark.parametrize("name", [*VARIANTS, "scattered", "zero-clusters"])
def test_the_guest_reader_writes_what_qemu_img_writes(
    images: dict[str, Path], tmp_path: Path, name: str
) -> None:
    source = images[name]
    out = tmp_path / "out.raw"
    result = convert(source, out, checksums=("md5", "sha256"))
    assert result.own_reader and not result.prehashed
    assert (
        b"Images are identical" in run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", source, out).stdout
    )
    theirs = tmp_path / "theirs.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", source, theirs)
    assert _sha256(out) == _sha256(theirs) == result.checksums["sha256"]
    assert result.checksums["md5"] == run("md5sum", out).stdout.split()[0].decode()
    assert out.stat().st_size == result.virtual_size


@pytest.mark.integration
@pytest.mark.parametrize("name", ["v3", "compressed-zstd", "extended-l2", "scattered"])
def test_prehashed_digests_are_those_of_the_output_and_are_used(
    images: dict[str, Path], tmp_path: Path, name: str
) -> None:
    source = tmp_path / "download.qcow2"
    shutil.copy(images[name], source)
    with FileSource(source) as opened:
        digests = hash_guest(opened, source, ("md5", "sha512", "sha256"))
    assert digests is not None
    out = tmp_path / "out.raw"
    result = convert(source, out, checksums=("sha256", "md5"), prehashed=digests)
    assert result.prehashed and result.own_reader
    assert result.checksums == {"sha256": _sha256(out), "md5": run("md5sum", out).stdout.split()[0].decode()}
    assert digests.digests["sha512"] == run("sha512sum", out).stdout.split()[0].decode()
    assert (
        b"Images are identical" in run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", source, out).stdout
    )


@pytest.mark.integration
def test_hashing_a_file_as_it_grows_gives_the_digests_of_the_complete_file(
    images: dict[str, Path], tmp_path: Path
) -> None:
    """A writer thread appends the image in small pieces (a download); ``hash_guest`` reads
    it through a ``GrowingFile`` meanwhile, waiting for each byte it needs."""
    data = images["scattered"].read_bytes()
    target = tmp_path / "download"
    target.touch()
    with GrowingFile(target) as growing:

        def write() -> None:
            growing.expect(len(data))
            with target.open("ab") as out:
                for start in range(0, len(data), 100_000):
                    out.write(data[start : start + 100_000])
                    out.flush()
                    growing.grew(len(data[start : start + 100_000]))
            growing.finish()

        writer = threading.Thread(target=write)
        writer.start()
        digests = hash_guest(growing, target, ("sha256",))
        writer.join()
    assert digests is not None and digests.file_size == len(data)
    expected = tmp_path / "expected.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", images["scattered"], expected)
    assert digests.digests["sha256"] == _sha256(expected)
    result = convert(target, tmp_path / "out.raw", checksums=("sha256",), prehashed=digests)
    assert result.prehashed and result.checksums["sha256"] == _sha256(expected)


@pytest.mark.integration
def test_prehashed_digests_of_another_file_or_size_are_not_used(
    images: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "a.qcow2"
    shutil.copy(images["v3"], source)
    with FileSource(images["scattered"]) as opened:
        other = hash_guest(opened, images["scattered"], ("sha256",))
    with FileSource(source) as opened:
        own = hash_guest(opened, source, ("sha256",))
    assert other is not None and own is not None
    out = tmp_path / "out.raw"
    result = convert(source, out, checksums=("sha256",), prehashed=other)
    assert not result.prehashed and result.checksums["sha256"] == _sha256(out)
    with source.open("ab") as f:  # the file changed after it was hashed
        f.write(bytes(512))
    result = convert(source, out, checksums=("sha256",), prehashed=own, force=True)
    assert not result.prehashed and result.checksums["sha256"] == _sha256(out)
    result = convert(source, out, checksums=("sha512",), prehashed=own, force=True)  # not computed
    assert (
        not result.prehashed
        and result.checksums["sha512"] == run("sha512sum", out).stdout.split()[0].decode()
    )


@pytest.mark.integration
def test_images_the_reader_does_not_take_are_not_prehashed(tmp_path: Path) -> None:
    backed = tmp_path / "backed.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", backed, "16M")
    raw = sparse_file(tmp_path / "plain.raw", 4 * MiB)
    beyond = tmp_path / "beyond.qcow2"
    qemu_img("create", "-f", "qcow2", beyond, "4M")
    _qemu_io(beyond, "write -P 0x42 0 64K")
    with beyond.open("r+b") as f:  # the file ends before its data cluster
        f.truncate(beyond.stat().st_size - 64 * KiB)
    for path in (backed, raw, beyond):
        with FileSource(path) as opened:
            assert hash_guest(opened, path, ("sha256",)) is None, path


@pytest.mark.integration
def test_guest_runs_cover_the_disk_in_order_with_bounded_reads(tmp_path: Path) -> None:
    """40 MiB of contiguous clusters (one L2 entry run) come as reads of at most 8 MiB; the runs
    tile the disk exactly, and what they read is the guest (``pread`` is built on them)."""
    raw = sparse_file(tmp_path / "disk.raw", 64 * MiB)
    block = os.urandom(40 * MiB)
    with raw.open("r+b") as f:
        f.seek(8 * MiB)
        f.write(block)
    image = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, image)
    with FileSource(image) as opened:
        guest = qcow2.open_image(opened, Limits()).guest
        assert isinstance(guest, MappedGuestSource)
        position = 0
        for offset, run in guest.runs():
            assert offset == position
            if run.host_offset is not None:
                assert run.length <= 8 * MiB
            position += run.length
        assert position == 64 * MiB
        assert guest.pread(8 * MiB - 100, 40 * MiB + 200) == bytes(100) + block + bytes(100)


@pytest.mark.integration
def test_hashing_in_a_thread_beside_the_copy(images: dict[str, Path], tmp_path: Path) -> None:
    """``GuestHashing``: convert copies while the thread hashes, then takes its digests; digests
    that are not this conversion's (another file) make convert hash what it wrote instead; a
    cancelled thread ends, gives none, and closes its source."""
    source = tmp_path / "download.qcow2"
    shutil.copy(images["scattered"], source)
    hashing = GuestHashing(FileSource(source), source, ("sha256",))
    result = convert(source, tmp_path / "out.raw", checksums=("sha256",), prehashed=hashing.result)
    assert result.prehashed and result.checksums["sha256"] == _sha256(tmp_path / "out.raw")
    hashing.cancel()  # after the end: nothing to stop

    other = GuestHashing(FileSource(images["v3"]), images["v3"], ("sha256",))
    result = convert(source, tmp_path / "again.raw", checksums=("sha256",), prehashed=other.result)
    assert result.own_reader and not result.prehashed
    assert result.checksums["sha256"] == _sha256(tmp_path / "again.raw")

    big = tmp_path / "big.qcow2"
    qemu_img("create", "-f", "qcow2", big, "64G")  # 64 GiB of zeros to hash: long enough to stop
    opened = FileSource(big)
    stopped = GuestHashing(opened, big, ("md5",))
    stopped.cancel()
    assert stopped.result() is None
    with pytest.raises(ImageIOError):
        opened.pread(0, 4)


@pytest.mark.integration
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "page-cache"])
@pytest.mark.parametrize("name", [*VARIANTS, "scattered", "zero-clusters"])
def test_the_output_written_as_the_image_is_hashed_is_qemu_imgs(
    images: dict[str, Path], tmp_path: Path, name: str, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hash_guest(output=...)`` writes the raw conversion in the hashing pass (around the page
    cache, or through it): byte for byte qemu-img's, holes where the guest has none; a
    ``GuestHashing`` that wrote it hands it to convert, which renames it into place."""
    monkeypatch.setattr(direct_io, "ENABLED", direct)
    monkeypatch.setattr(direct_io, "STAGE", 3 * direct_io.ALIGN)  # many turns of the buffer
    source = tmp_path / "download.qcow2"
    shutil.copy(images[name], source)
    theirs = tmp_path / "theirs.raw"
    qemu_img("convert", "-f", "qcow2", "-O", "raw", source, theirs)
    written = tmp_path / "prewritten.raw"
    with FileSource(source) as opened:
        digests = hash_guest(opened, source, ("sha256",), output=written)
    assert digests is not None and digests.output == str(written.resolve())
    assert written.read_bytes() == theirs.read_bytes()
    assert digests.digests["sha256"] == _sha256(theirs)
    if name == "v3":  # mostly holes (``_source_raw``): they stay holes
        assert written.stat().st_blocks * 512 < SIZE // 2

    written.unlink()
    hashing = GuestHashing(FileSource(source), source, ("sha256",), output=written)
    out = tmp_path / "out.raw"
    result = convert(source, out, checksums=("sha256",), prehashed=hashing)
    assert result.prehashed and result.own_reader
    assert out.read_bytes() == theirs.read_bytes() and result.checksums["sha256"] == _sha256(theirs)
    assert not written.exists()  # renamed into place, not copied


@pytest.mark.integration
def test_an_output_written_for_another_file_is_not_taken(images: dict[str, Path], tmp_path: Path) -> None:
    """Written as another file was hashed: convert writes its own output (and leaves that one)."""
    source = tmp_path / "download.qcow2"
    shutil.copy(images["scattered"], source)
    written = tmp_path / "prewritten.raw"
    other = GuestHashing(FileSource(images["v3"]), images["v3"], ("sha256",), output=written)
    out = tmp_path / "out.raw"
    result = convert(source, out, checksums=("sha256",), prehashed=other)
    assert result.own_reader and not result.prehashed
    assert result.checksums["sha256"] == _sha256(out)
    compared = run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", source, out).stdout
    assert b"Images are identical" in compared
    assert written.exists() and _sha256(written) != _sha256(out)


def test_writing_stops_at_the_budget_and_the_hashing_goes_on(tmp_path: Path) -> None:
    """More data than the file holds (a cluster mapped again and again) is not written: the
    pass only hashes from there on, and says the output is not whole."""
    path = tmp_path / "prewritten.raw"
    writer = guest_reader._Prewriter(("sha256",), path, budget=3 * MiB)
    block = os.urandom(MiB)
    for index in range(5):
        writer.write(index * MiB, block)
    assert not writer.finish(5 * MiB)
    writer.close()
    assert writer.hashes.hexdigests()["sha256"] == hashlib.sha256(block * 5).hexdigest()
    assert path.stat().st_size <= 3 * MiB


@pytest.mark.parametrize("direct", [True, False, "refused"], ids=["direct", "page-cache", "refused-later"])
def test_a_direct_output_holds_the_bytes_written_and_holes_between(
    tmp_path: Path, direct: bool | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DirectOutputFile``: data at rising, unaligned offsets with gaps (within a block, across
    blocks, across the staging buffer); the gaps read as zeros, and the file is cut to size.
    "refused-later": the filesystem takes O_DIRECT at open but refuses the second transfer."""
    monkeypatch.setattr(direct_io, "ENABLED", bool(direct))
    direct_writes = refuse_second_direct_write(monkeypatch) if direct == "refused" else []
    monkeypatch.setattr(direct_io, "STAGE", 4 * direct_io.ALIGN)
    size = 300_001
    expected = bytearray(size)
    pieces = [(0, 700), (1000, 512), (1600, 9000), (40_960, 16_384), (123_457, 33_333), (290_000, 10_001)]
    out = output.DirectOutputFile(tmp_path / "out.raw")
    assert out.direct == bool(direct)
    try:
        for offset, length in pieces:
            data = os.urandom(length)
            expected[offset : offset + length] = data
            out.write_at(offset, data)
        with pytest.raises(ValueError):
            out.write_at(100, b"x")  # front to back only
        out.finish(size)
    finally:
        out.close()
    assert (tmp_path / "out.raw").read_bytes() == bytes(expected)
    assert direct != "refused" or len(direct_writes) == 2  # the refused one, then none


def refuse_second_direct_write(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``os.pwrite`` as ``direct_io`` sees it: EINVAL for the second write through an O_DIRECT
    descriptor and after (an alignment the filesystem wants larger); the list counts them."""
    real, direct_writes = os.pwrite, []

    def pwrite(fd: int, data: object, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            direct_writes.append(offset)
            if len(direct_writes) > 1:
                raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)
    return direct_writes
