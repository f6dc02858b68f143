"""open_guest: choosing the filesystem, every image format, and leaving the image alone on failure."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img, qemu_img_info, run, sfdisk
from tests.guest.images import (
    MIB,
    GuestImage,
    cat,
    converted,
    e2fsck_clean,
    flat_ext4,
    listing,
    sha256_file,
    to_raw,
)

from imagewright.errors import (
    GuestFilesystemError,
    ImageIOError,
    ImagewrightError,
    InvalidArgumentError,
    UnsafeImageError,
)
from imagewright.files import TEMP_MARK
from imagewright.guest import libguestfs, open_guest
from imagewright.programs import e2fs as e2fs_program

pytestmark = pytest.mark.integration


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TEMP_MARK in p.name)


# ---- which filesystem -------------------------------------------------------------------


@pytest.mark.parametrize("table", ["mbr", "gpt"])
def test_partitioned_disk_opens_the_partition_holding_etc(
    table: str, mbr_image: GuestImage, gpt_image: GuestImage
) -> None:
    image = mbr_image if table == "mbr" else gpt_image
    with open_guest(image.path, writable=True) as guest:
        assert guest.description.startswith("partition 2 (ext4)")
        assert guest.read_file("/etc/hostname") == b"used-vm\n"
        guest.write_file("/etc/hostname", b"edited\n")
    assert cat(image, "/etc/hostname") == b"edited\n"
    clean, output = e2fsck_clean(image)
    assert clean, output
    boot = GuestImage(image.path, MIB)
    assert e2fsck_clean(boot)[0]


def test_partition_can_be_named(mbr_image: GuestImage) -> None:
    with open_guest(mbr_image.path, partition=1) as guest:
        assert guest.description.startswith("partition 1 (ext2)")
        assert [e.name for e in guest.listdir("/") if e.name != "lost+found"] == ["grub"]
    with (
        pytest.raises(InvalidArgumentError, match=r"no partition 7 \(it has: 1, 2\)"),
        open_guest(mbr_image.path, partition=7),
    ):
        pass


def test_partition_option_on_a_flat_image_is_refused(flat_image: GuestImage) -> None:
    with (
        pytest.raises(InvalidArgumentError, match="no partition table"),
        open_guest(flat_image.path, partition=1),
    ):
        pass


def test_format_is_an_assertion(flat_image: GuestImage) -> None:
    with (
        pytest.raises(InvalidArgumentError, match="is a raw image, not qcow2"),
        open_guest(flat_image.path, format="qcow2"),
    ):
        pass


def test_xfs_root_without_libguestfs_names_the_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libguestfs is installed here (the backend has its own tests): take it away for this one.
    monkeypatch.setattr(libguestfs, "available", lambda: False)
    disk = tmp_path / "xfs.raw"
    with disk.open("wb") as f:
        f.truncate(400 * MIB)
    sfdisk(disk, "label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
    part = tmp_path / "part.xfs"
    with part.open("wb") as f:
        f.truncate(398 * MIB)
    run("mkfs.xfs", "-q", part)
    run("dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
    before = sha256_file(disk)
    with pytest.raises(GuestFilesystemError) as caught, open_guest(disk, writable=True):
        pass
    assert str(caught.value) == (
        "The root filesystem is xfs; imagewright edits ext2/3/4 directly and needs libguestfs "
        "(Debian: libguestfs-tools) for xfs."
    )
    assert sha256_file(disk) == before
    assert leftovers(tmp_path) == []


def test_image_without_a_filesystem(tmp_path: Path) -> None:
    blank = tmp_path / "blank.raw"
    with blank.open("wb") as f:
        f.truncate(4 * MIB)
    with (
        pytest.raises(GuestFilesystemError, match="neither a partition table nor a filesystem"),
        open_guest(blank),
    ):
        pass


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(ImageIOError, match="does not exist"), open_guest(tmp_path / "nope.raw"):
        pass


def test_unsafe_image_is_refused_before_anything_reads_it(flat_image: GuestImage, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", flat_image.path, overlay)
    before = sha256_file(overlay)
    with pytest.raises(UnsafeImageError, match="backing file"), open_guest(overlay, writable=True):
        pass
    assert sha256_file(overlay) == before
    assert leftovers(tmp_path) == []


# ---- formats ----------------------------------------------------------------------------


def test_qcow2_stays_qcow2_with_its_options(mbr_image: GuestImage, tmp_path: Path) -> None:
    image = converted(
        mbr_image,
        "qcow2",
        tmp_path / "disk.qcow2",
        "cluster_size=131072",
        "compression_type=zstd",
        "lazy_refcounts=on",
    )
    with open_guest(image.path, writable=True) as guest:
        guest.write_file("/etc/hostname", b"qcow2-edited\n")
        guest.delete("/etc/ssh/ssh_host_rsa_key")
    info = qemu_img_info(image.path, "qcow2")
    assert info["format"] == "qcow2"
    assert info["cluster-size"] == 131072
    assert info["format-specific"]["data"]["compression-type"] == "zstd"
    assert info["format-specific"]["data"]["lazy-refcounts"] is True
    check = json.loads(run("qemu-img", "check", "-f", "qcow2", "--output=json", image.path).stdout)
    assert check["check-errors"] == 0 and "corruptions" not in check
    raw = to_raw(image, tmp_path / "back.raw")
    assert cat(raw, "/etc/hostname") == b"qcow2-edited\n"
    assert "ssh_host_rsa_key" not in listing(raw, "/etc/ssh")
    assert e2fsck_clean(raw)[0]
    assert leftovers(tmp_path) == []


def test_compressed_qcow2_is_written_back_compressed(mbr_image: GuestImage, tmp_path: Path) -> None:
    image = tmp_path / "compressed.qcow2"
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", mbr_image.path, image)
    with open_guest(image, writable=True) as guest:
        guest.write_file("/etc/hostname", b"c\n")
    check = json.loads(run("qemu-img", "check", "-f", "qcow2", "--output=json", image).stdout)
    assert check.get("compressed-clusters", 0) > 0
    assert check["check-errors"] == 0


@pytest.mark.parametrize(
    ("subformat", "adapter"),
    [("monolithicSparse", "lsilogic"), ("streamOptimized", "buslogic")],
)
def test_vmdk_keeps_subformat_and_adapter(
    subformat: str, adapter: str, flat_image: GuestImage, tmp_path: Path
) -> None:
    image = converted(
        flat_image, "vmdk", tmp_path / "disk.vmdk", f"subformat={subformat}", f"adapter_type={adapter}"
    )
    with open_guest(image.path, writable=True) as guest:
        guest.write_file("/etc/hostname", b"vmdk\n")
    info = qemu_img_info(image.path, "vmdk")
    assert info["format-specific"]["data"]["create-type"] == subformat
    assert f'ddb.adapterType = "{adapter}"'.encode() in image.path.read_bytes()[: 64 * 1024]
    raw = to_raw(image, tmp_path / "back.raw")
    assert cat(raw, "/etc/hostname") == b"vmdk\n"
    assert e2fsck_clean(raw)[0]


@pytest.mark.parametrize(
    ("fmt", "options", "check"),
    [
        (
            "vpc",
            ("subformat=fixed",),
            lambda data: data[-512:][:8] == b"conectix" and data[:8] != b"conectix",
        ),
        ("vpc", ("subformat=dynamic",), lambda data: data[:8] == b"conectix"),
        ("vdi", ("static=on",), lambda data: int.from_bytes(data[0x4C:0x50], "little") == 2),
        ("vhdx", (), lambda data: data[:8] == b"vhdxfile"),
    ],
)
def test_other_formats_round_trip(
    fmt: str, options: tuple[str, ...], check: Callable[[bytes], bool], flat_image: GuestImage, tmp_path: Path
) -> None:
    image = converted(flat_image, fmt, tmp_path / f"disk.{fmt}", *options)
    size_before = qemu_img_info(image.path, fmt)["virtual-size"]
    with open_guest(image.path, writable=True) as guest:
        guest.write_file("/etc/hostname", fmt.encode())
    assert qemu_img_info(image.path, fmt)["virtual-size"] == size_before
    assert check(image.path.read_bytes())
    raw = to_raw(image, tmp_path / "back.raw")
    assert cat(raw, "/etc/hostname") == fmt.encode()


def _vhd_footer_sizing(path: Path) -> tuple[bytes, int, bytes]:
    """Creator application, current size and CHS geometry of a VHD's footer (spec section 1.3)."""
    footer = path.read_bytes()[-512:]
    assert footer[:8] == b"conectix"
    return footer[28:32], int.from_bytes(footer[48:56], "big"), footer[56:60]


@pytest.mark.parametrize(
    ("options", "creator"),
    [(("subformat=dynamic",), b"qemu"), (("subformat=dynamic", "force_size=on"), b"qem2")],
)
def test_vhd_keeps_its_own_sizing(
    options: tuple[str, ...], creator: bytes, flat_image: GuestImage, tmp_path: Path
) -> None:
    """A CHS-sized VHD is written back CHS-sized, a footer-sized one footer-sized (not force_size always)."""
    image = converted(flat_image, "vpc", tmp_path / "disk.vhd", *options)
    before = _vhd_footer_sizing(image.path)
    assert before[0] == creator
    size_before = qemu_img_info(image.path, "vpc")["virtual-size"]
    with open_guest(image.path, writable=True) as guest:
        guest.write_file("/etc/hostname", b"vhd\n")
    assert _vhd_footer_sizing(image.path) == before
    assert qemu_img_info(image.path, "vpc")["virtual-size"] == size_before
    assert cat(to_raw(image, tmp_path / "back.raw"), "/etc/hostname") == b"vhd\n"
    assert leftovers(tmp_path) == []


def test_read_only_qcow2_leaves_nothing_behind(flat_image: GuestImage, tmp_path: Path) -> None:
    image = converted(flat_image, "qcow2", tmp_path / "ro.qcow2")
    before = sha256_file(image.path)
    with open_guest(image.path) as guest:
        assert guest.read_file("/etc/hostname") == b"used-vm\n"
    assert sha256_file(image.path) == before
    assert leftovers(tmp_path) == []


def test_unchanged_guest_is_not_rewritten(flat_image: GuestImage, tmp_path: Path) -> None:
    image = converted(flat_image, "qcow2", tmp_path / "same.qcow2")
    stat_before = image.path.stat()
    with open_guest(image.path, writable=True) as guest:
        guest.read_file("/etc/hostname")
    stat_after = image.path.stat()
    assert (stat_after.st_ino, stat_after.st_mtime_ns) == (stat_before.st_ino, stat_before.st_mtime_ns)


def test_symlinked_image_is_edited_through_the_link(flat_image: GuestImage, tmp_path: Path) -> None:
    alias = tmp_path / "alias.raw"
    alias.symlink_to(flat_image.path)
    with open_guest(alias, writable=True) as guest:
        guest.write_file("/etc/hostname", b"via link\n")
    assert alias.is_symlink()
    assert cat(flat_image, "/etc/hostname") == b"via link\n"


def test_image_name_with_question_mark_and_colon(flat_image: GuestImage, tmp_path: Path) -> None:
    odd = tmp_path / "what?offset=0:odd.raw"
    os.rename(flat_image.path, odd)
    with open_guest(odd, writable=True) as guest:
        guest.write_file("/etc/hostname", b"odd\n")
    plain = tmp_path / "plain-link"
    plain.symlink_to(odd)
    assert cat(GuestImage(plain, 0), "/etc/hostname") == b"odd\n"


# ---- failures leave the image untouched -------------------------------------------------


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_exception_midway_leaves_image_byte_identical(
    fmt: str, mbr_image: GuestImage, tmp_path: Path
) -> None:
    image = mbr_image if fmt == "raw" else converted(mbr_image, "qcow2", tmp_path / "disk.qcow2")
    before = sha256_file(image.path)
    with pytest.raises(RuntimeError), open_guest(image.path, writable=True) as guest:
        guest.delete("/etc/ssh", recursive=True)
        guest.write_file("/etc/hostname", b"half\n")
        guest.flush()
        raise RuntimeError("stop here")
    assert sha256_file(image.path) == before
    assert leftovers(image.path.parent) == []


def test_debugfs_failure_midway_leaves_image_byte_identical(
    mbr_image: GuestImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sha256_file(mbr_image.path)
    real = e2fs_program.run_debugfs
    writes = {"count": 0}

    def failing(device: str, commands: object, *, writable: bool = False, **kwargs: object) -> list[bytes]:
        if writable:
            writes["count"] += 1
            if writes["count"] == 2:
                raise e2fs_program.ProgramError("debugfs was killed (injected)")
        return real(device, commands, writable=writable)  # type: ignore[arg-type]

    monkeypatch.setattr(e2fs_program, "run_debugfs", failing)
    with (
        pytest.raises(ImagewrightError, match="injected"),
        open_guest(mbr_image.path, writable=True) as guest,
    ):
        guest.delete("/var/cache", recursive=True)
        guest.flush()
        guest.write_file("/etc/hostname", b"never\n")
        guest.flush()
    assert writes["count"] == 2
    assert sha256_file(mbr_image.path) == before
    assert leftovers(mbr_image.path.parent) == []


def test_failed_command_is_reported_and_image_untouched(flat_image: GuestImage) -> None:
    before = sha256_file(flat_image.path)
    with (
        pytest.raises(GuestFilesystemError, match="not a directory"),
        open_guest(flat_image.path, writable=True) as guest,
    ):
        guest.write_file("/etc/hostname/child", b"x")
    assert sha256_file(flat_image.path) == before


def test_filesystem_with_errors_is_not_written(flat_image: GuestImage) -> None:
    run("debugfs", "-w", "-R", "sif /etc/hostname links_count 7", flat_image.path)
    before = sha256_file(flat_image.path)
    with (
        pytest.raises(GuestFilesystemError, match=r"e2fsck finds errors .* before any change"),
        open_guest(flat_image.path, writable=True) as guest,
    ):
        guest.write_file("/etc/motd", b"x")
    assert sha256_file(flat_image.path) == before


def test_pending_journal_is_replayed_before_writing(flat_image: GuestImage) -> None:
    run("debugfs", "-w", "-R", "feature needs_recovery", flat_image.path)
    with open_guest(flat_image.path, writable=True) as guest:
        guest.write_file("/etc/motd", b"after replay\n")
    features = run("dumpe2fs", "-h", flat_image.path).stdout.decode()
    assert "needs_recovery" not in features
    assert cat(flat_image, "/etc/motd") == b"after replay\n"
    assert e2fsck_clean(flat_image)[0]


def test_filesystem_larger_than_its_partition_is_refused(tmp_path: Path, guest_tree: Path) -> None:
    disk = tmp_path / "lying.raw"
    with disk.open("wb") as f:
        f.truncate(64 * MIB)
    sfdisk(disk, "label: dos\nstart=2048, size=20480, type=83\n")  # a 10 MiB partition
    run("mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={MIB}", "-d", guest_tree, disk, "40M")
    with (
        pytest.raises(GuestFilesystemError, match="claims 41943040 bytes but its space is only 10485760"),
        open_guest(disk, writable=True),
    ):
        pass


def test_image_changed_during_edit_is_not_overwritten(flat_image: GuestImage) -> None:
    with (
        pytest.raises(ImageIOError, match="changed while"),
        open_guest(flat_image.path, writable=True) as guest,
    ):
        guest.write_file("/etc/hostname", b"mine\n")
        with flat_image.path.open("r+b") as f:
            f.seek(0)
            f.write(b"\0")
    assert cat(flat_image, "/etc/hostname") == b"used-vm\n"


def test_flat_ext2_and_ext3(guest_tree: Path, tmp_path: Path) -> None:
    for fs_type in ("ext2", "ext3"):
        image = flat_ext4(guest_tree, tmp_path / f"{fs_type}.raw", fs_type=fs_type)
        with open_guest(image.path, writable=True) as guest:
            assert guest.fs_type == fs_type
            guest.write_file("/etc/hostname", fs_type.encode())
        assert cat(image, "/etc/hostname") == fs_type.encode()
        assert e2fsck_clean(image)[0]
