"""Our FAT directory and file reader against mkfs.fat + mtools: the same tree, the same bytes;
and hostile volumes (loops, clusters out of range, lying sizes, forged long names) refused in
one sentence or bounded, never an exception of another kind."""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import mtools, run, sparse_file

from imagewright.binary import BytesSource, FileSource
from imagewright.disk.filesystems.fat import MAX_DIRECTORY_ENTRIES, FatEntry, FatVolume
from imagewright.errors import ImageFormatError

pytestmark = pytest.mark.integration

MiB = 1 << 20


def make_fat(tmp: Path, bits: int, size: int, *extra: str) -> Path:
    image = sparse_file(tmp / f"fat{bits}.img", size)
    run("mkfs.fat", "-F", str(bits), "-n", f"FAT{bits}", *extra, image)
    return image


def walk(volume: FatVolume, cluster: int = 0, prefix: str = "") -> Iterator[tuple[str, FatEntry]]:
    for entry in volume.list_directory(cluster):
        path = f"{prefix}{entry.name}"
        yield path, entry
        if entry.is_directory:
            yield from walk(volume, entry.first_cluster, path + "/")


def read_all(volume: FatVolume, entry: FatEntry) -> bytes:
    data = b""
    while len(data) < entry.size:
        data += volume.read_file(entry, len(data), 256 * 1024)
    return data


def populate(image: Path, tmp: Path) -> dict[str, bytes]:
    """A tree with 8.3 names, lower-case and long names, deep and large directories, big files."""
    rng = random.Random(16)
    tree = tmp / "tree"
    files = {
        "EFI/BOOT/BOOTX64.EFI": rng.randbytes(70_000),
        "EFI/debian/grubx64.efi": rng.randbytes(300_000),
        "EFI/debian/grub.cfg": b"configfile $prefix/grub.cfg\n",
        "A long file name with spaces.txt": b"long\n",
        "MiXeD.Efi": rng.randbytes(5000),
        "deep/er/and deeper/leaf.bin": rng.randbytes(1234),
        "empty.txt": b"",
        "big.bin": rng.randbytes(1_300_000),
    }
    files.update({f"many/file-{n:03d}.dat": rng.randbytes(n) for n in range(300)})
    for path, data in files.items():
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    mtools("mcopy", "-s", "-Q", "-i", image, *sorted(tree.iterdir()), "::/")
    return files


@pytest.mark.parametrize(("bits", "size"), [(12, 8 * MiB), (16, 48 * MiB), (32, 80 * MiB)])
def test_tree_and_bytes_match_mtools(tmp_path: Path, bits: int, size: int) -> None:
    extra = ["-s", "1"] if bits == 32 else []  # 512-byte clusters: FAT32 needs 65525 of them
    image = make_fat(tmp_path, bits, size, *extra)
    files = populate(image, tmp_path)
    listing = mtools("mdir", "-/", "-b", "-i", image, "::/").decode()
    listed = {line.strip()[3:] for line in listing.splitlines()}
    with FileSource(image) as src:
        volume = FatVolume.open(src)
        assert volume is not None and volume.fat_bits == bits
        ours = dict(walk(volume))
        assert {path + ("/" if e.is_directory else "") for path, e in ours.items()} == listed
        for path, data in files.items():
            entry = ours[path]
            assert not entry.is_directory and entry.size == len(data)
            assert read_all(volume, entry) == data, path
        # Reads in the middle of a file and across cluster boundaries.
        big = ours["big.bin"]
        for offset, length in ((0, 1), (511, 2), (4095, 8193), (1_299_990, 100)):
            assert volume.read_file(big, offset, length) == files["big.bin"][offset : offset + length]
        found = volume.lookup("efi/Debian/GRUBX64.EFI")
        assert found is not None and found.name == "grubx64.efi"
        assert volume.lookup("EFI/nothing") is None and volume.lookup("big.bin/x") is None


def test_fragmented_file(tmp_path: Path) -> None:
    image = make_fat(tmp_path, 16, 16 * MiB, "-s", "1")
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    for name in ("a", "b", "c"):
        (src_dir / name).write_bytes(name.encode() * 20_000)
        mtools("mcopy", "-Q", "-i", image, src_dir / name, "::/")
    mtools("mdel", "-i", image, "::/b")
    payload = os.urandom(200_000)
    (src_dir / "d").write_bytes(payload)
    mtools("mcopy", "-Q", "-i", image, src_dir / "d", "::/")
    with FileSource(image) as src:
        volume = FatVolume.open(src)
        assert volume is not None
        entry = volume.lookup("d")
        assert entry is not None
        assert read_all(volume, entry) == payload == mtools("mtype", "-i", image, "::/d")


# --- hostile volumes -------------------------------------------------------------------------


def geometry(image: Path) -> tuple[int, int, int, int]:
    """(bytes per sector, sectors per cluster, FAT offset, data offset) of a FAT16 volume, read by hand."""
    boot = image.read_bytes()[:512]
    sector, per_cluster, reserved, fats, root_entries = struct.unpack_from("<HBHBH", boot, 11)
    fat_sectors = struct.unpack_from("<H", boot, 22)[0]
    root_sectors = root_entries * 32 // sector
    return sector, per_cluster, reserved * sector, (reserved + fats * fat_sectors + root_sectors) * sector


def patch(image: Path, offset: int, data: bytes) -> None:
    with image.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def small_volume(tmp_path: Path) -> tuple[Path, FatEntry, FatEntry]:
    image = make_fat(tmp_path, 16, 16 * MiB, "-s", "1")
    tree = tmp_path / "t"
    (tree / "dir").mkdir(parents=True)
    (tree / "dir" / "file.bin").write_bytes(os.urandom(5000))
    mtools("mcopy", "-s", "-Q", "-i", image, tree / "dir", "::/")
    with FileSource(image) as src:
        volume = FatVolume.open(src)
        assert volume is not None
        directory, file = volume.lookup("dir"), volume.lookup("dir/file.bin")
    assert directory is not None and file is not None
    return image, directory, file


def test_cluster_chain_loop_is_refused(tmp_path: Path) -> None:
    image, _directory, file = small_volume(tmp_path)
    _sector, _per, fat_offset, _data = geometry(image)
    # The file's second cluster points back at its first: a loop.
    second = file.first_cluster + 1
    patch(image, fat_offset + second * 2, struct.pack("<H", file.first_cluster))
    with FileSource(image) as src:
        volume = FatVolume.open(src)
        assert volume is not None
        entry = volume.lookup("dir/file.bin")
        assert entry is not None
        with pytest.raises(ImageFormatError, match=r"shorter than its size|loops"):
            volume.read_file(entry, 4600, 300)


def test_cluster_outside_the_volume_is_refused(tmp_path: Path) -> None:
    image, _directory, file = small_volume(tmp_path)
    _sector, _per, fat_offset, _data = geometry(image)
    patch(image, fat_offset + file.first_cluster * 2, struct.pack("<H", 0xFFF0))
    with FileSource(image) as src:
        volume = FatVolume.open(src)
        assert volume is not None
        entry = volume.lookup("dir/file.bin")
        assert entry is not None
        with pytest.raises(ImageFormatError, match="outside the volume"):
            volume.read_file(entry, 0, 5000)


def test_size_beyond_the_chain_is_refused(tmp_path: Path) -> None:
    image, directory, _file = small_volume(tmp_path)
    _sector, _per, _fat, data_offset = geometry(image)
    sector = 512
    directory_at = data_offset + (directory.first_cluster - 2) * sector
    # Entries of "dir": ".", "..", then the long name and short entry of file.bin: find it.
    raw = image.read_bytes()[directory_at : directory_at + sector]
    index = next(i for i in range(0, sector, 32) if raw[i : i + 11] == b"FILE    BIN")
    patch(image, directory_at + index + 28, struct.pack("<I", 0x7FFF_FFFF))
    with FileSource(image) as src:
        volume = FatVolume.open(src)
        assert volume is not None
        entry = volume.lookup("dir/file.bin")
        assert entry is not None and entry.size == 0x7FFF_FFFF
        with pytest.raises(ImageFormatError):
            volume.read_file(entry, 0x7FFF_0000, 100)
        with pytest.raises(ImageFormatError, match="out of bounds"):
            volume.read_file(entry, 0, 64 * MiB)


def test_forged_long_name_falls_back_to_the_short_name(tmp_path: Path) -> None:
    image = make_fat(tmp_path, 16, 16 * MiB)
    (tmp_path / "A long name.txt").write_bytes(b"x")
    mtools("mcopy", "-Q", "-i", image, tmp_path / "A long name.txt", "::/")
    blob = bytearray(image.read_bytes())
    index = blob.find(b"A\x00 \x00l\x00")  # the first long-name piece: "A long" in UTF-16
    assert index > 0
    blob[index - 1 + 13] ^= 0xFF  # its checksum of the short name
    image.write_bytes(bytes(blob))
    with FileSource(image) as src:
        volume = FatVolume.open(src)
        assert volume is not None
        (entry,) = [e for e in volume.list_directory() if not e.is_directory]
    assert entry.name == entry.short_name and entry.name.upper().startswith("ALONGN")


def test_huge_directory_is_bounded(tmp_path: Path) -> None:
    image = make_fat(tmp_path, 32, 80 * MiB, "-s", "1")
    _sector = 512
    boot = image.read_bytes()[:512]
    reserved, fats = struct.unpack_from("<H", boot, 14)[0], boot[16]
    fat_sectors, root_cluster = struct.unpack_from("<I", boot, 36)[0], struct.unpack_from("<I", boot, 44)[0]
    fat_offset = reserved * 512
    data_offset = (reserved + fats * fat_sectors) * 512
    # Chain the root directory through 400 clusters, every entry a file "F" with no clusters.
    clusters = list(range(root_cluster, root_cluster + 400))
    entry = b"F          " + bytes([0x20]) + bytes(20)
    with image.open("r+b") as f:
        for position, cluster in enumerate(clusters):
            following = clusters[position + 1] if position + 1 < len(clusters) else 0x0FFFFFFF
            f.seek(fat_offset + cluster * 4)
            f.write(struct.pack("<I", following))
            f.seek(data_offset + (cluster - 2) * 512)
            f.write(entry * 16)
    with FileSource(image) as src:
        volume = FatVolume.open(src)
        assert volume is not None
        listing = volume.list_directory()
    assert len(listing) == MAX_DIRECTORY_ENTRIES


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_is_refused_in_one_sentence(data: st.DataObject, fat_template: bytes) -> None:
    blob = bytearray(fat_template)
    for _ in range(data.draw(st.integers(1, 40))):
        # Damage the allocation table and the directories (the first 300 KiB), not the boot sector.
        position = data.draw(st.integers(512, 300 * 1024 - 1))
        blob[position] = data.draw(st.integers(0, 255))
    volume = FatVolume.open(BytesSource(bytes(blob)))
    assert volume is not None
    try:
        for _path, entry in walk_bounded(volume):
            if not entry.is_directory:
                volume.read_file(entry, 0, min(entry.size, 64 * 1024))
    except ImageFormatError as err:
        assert str(err).endswith(".") and "\n" not in str(err)


def walk_bounded(volume: FatVolume) -> Iterator[tuple[str, FatEntry]]:
    seen: set[int] = set()
    stack = [(0, "")]
    while stack and len(seen) < 64:
        cluster, prefix = stack.pop()
        for entry in volume.list_directory(cluster):
            yield prefix + entry.name, entry
            if entry.is_directory and entry.first_cluster not in seen:
                seen.add(entry.first_cluster)
                stack.append((entry.first_cluster, prefix + entry.name + "/"))


@pytest.fixture(scope="module")
def fat_template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("fat-template")
    image = make_fat(tmp, 16, 4 * MiB, "-s", "1")
    tree = tmp / "t"
    for path in ("EFI/BOOT/BOOTX64.EFI", "EFI/debian/grubx64.efi", "a long name.txt", "x/y/z.bin"):
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(os.urandom(3000))
    mtools("mcopy", "-s", "-Q", "-i", image, *sorted(tree.iterdir()), "::/")
    return image.read_bytes()
