"""UEFI boot loaders read by our PE reader and named, against binutils (objdump, objcopy) and
sbsigntool (sbverify) on the real binaries: Debian's signed shim, GRUB and MokManager, an
unsigned grub-mkimage GRUB, systemd-boot; hand-built PE files for the rest (Windows Boot
Manager's path, another machine's removable-media name, a unified kernel image, a kernel's
EFI stub); an ESP scanned through our FAT reader; hostile headers refused or ignored."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import mtools, run, sparse_file, which

from imagewright.binary import BytesSource, FileSource
from imagewright.disk.efiboot import PeImage, identify_loader, read_pe_image, scan_esp
from imagewright.errors import ImageFormatError
from imagewright.ops.build.efiloader import UNSIGNED_MODULES, signed_loader
from imagewright.programs import grub

pytestmark = pytest.mark.integration

SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


@pytest.fixture(scope="module")
def loaders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real boot loaders: Debian's signed ones (downloaded once into the cache), GRUB built here."""
    signed = signed_loader()
    found = {binary.name: binary.path for binary in signed.binaries}
    unsigned = tmp_path_factory.mktemp("grub") / "grubx64-unsigned.efi"
    grub.mkimage(unsigned, prefix="/EFI/debian", modules=UNSIGNED_MODULES, target="x86_64-efi")
    found["grub-unsigned"] = unsigned
    found["systemd-boot"] = SYSTEMD_BOOT
    assert SYSTEMD_BOOT.is_file(), "systemd-boot-efi is in the Makefile's APT_PACKAGES"
    return found


def pe_of(path: Path) -> PeImage:
    with FileSource(path) as src:
        pe = read_pe_image(src)
    assert pe is not None, path
    return pe


def sbverify_common_names(path: Path) -> set[str]:
    out = subprocess.run([which("sbverify"), "--list", str(path)], capture_output=True, check=False).stdout
    return set(re.findall(r"CN=([^/\n]+)", out.decode()))


def sbat_of(path: Path, tmp: Path) -> list[str]:
    out = tmp / f"{path.name}.sbat"
    run("objcopy", "-O", "binary", "--only-section=.sbat", path, out)
    lines = out.read_bytes().split(b"\0", 1)[0].decode().splitlines()
    return [",".join(line.split(",")[:2]) for line in lines if line and not line.startswith("sbat,")]


@pytest.mark.parametrize(
    ("name", "loader", "signed"),
    [
        ("shimx64.efi", "shim", True),
        ("grubx64.efi", "grub", True),
        ("mmx64.efi", "mokmanager", True),
        ("grub-unsigned", "grub", False),
        ("systemd-boot", "systemd-boot", False),
    ],
)
def test_real_loaders(loaders: dict[str, Path], tmp_path: Path, name: str, loader: str, signed: bool) -> None:
    path = loaders[name]
    pe = pe_of(path)
    assert "file format pei-x86-64" in run("objdump", "-f", path).stdout.decode()
    assert pe.architecture == "x86_64" and pe.is_x86_64_efi_application
    assert pe.signed is signed
    # Every name sbsigntool reads from the signer's certificates (we also see a time-stamping
    # authority's, which sbverify does not list).
    assert sbverify_common_names(path) <= set(pe.certificate_names)
    if signed:
        assert pe.certificate_names
    assert list(pe.sbat) == sbat_of(path, tmp_path)
    esp_name = {"mmx64.efi": "mmx64.efi"}.get(name, f"EFI/BOOT/{name}")
    assert identify_loader(esp_name, pe) == loader


def test_certificate_names_name_microsoft_for_shim_and_debian_for_grub(loaders: dict[str, Path]) -> None:
    assert "Microsoft Corporation UEFI CA 2011" in pe_of(loaders["shimx64.efi"]).certificate_names
    assert "Debian Secure Boot CA" in pe_of(loaders["grubx64.efi"]).certificate_names
    assert pe_of(loaders["systemd-boot"]).loader_info == "systemd-boot 252" or (
        (pe_of(loaders["systemd-boot"]).loader_info or "").startswith("systemd-boot ")
    )


# --- hand-built PE files ------------------------------------------------------------------------


def make_pe(
    *,
    machine: int = 0x8664,
    subsystem: int = 10,
    sections: tuple[str, ...] = (".text",),
    pe_offset: int = 0x80,
    linux_header: bool = False,
) -> bytes:
    """A minimal PE32+ (or PE32 for 32-bit machines) image: headers and one 512-byte block per section."""
    plus = machine in (0x8664, 0xAA64, 0x5064)
    optional_size = (112 if plus else 96) + 16 * 8
    headers_end = pe_offset + 24 + optional_size + 40 * len(sections)
    data_at = -(-headers_end // 512) * 512
    image = bytearray(data_at + 512 * len(sections))
    image[0:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, pe_offset)
    if linux_header:
        image[0x202:0x206] = b"HdrS"
    image[pe_offset : pe_offset + 4] = b"PE\0\0"
    struct.pack_into("<HH", image, pe_offset + 4, machine, len(sections))
    struct.pack_into("<H", image, pe_offset + 20, optional_size)
    optional = pe_offset + 24
    struct.pack_into("<H", image, optional, 0x20B if plus else 0x10B)
    struct.pack_into("<H", image, optional + 68, subsystem)
    struct.pack_into("<I", image, optional + (108 if plus else 92), 16)
    table = optional + optional_size
    for index, name in enumerate(sections):
        at = table + 40 * index
        image[at : at + 8] = name.encode()[:8].ljust(8, b"\0")
        struct.pack_into("<IIII", image, at + 8, 512, 0x1000 * (index + 1), 512, data_at + 512 * index)
    return bytes(image)


@pytest.mark.parametrize(
    ("path", "pe_kwargs", "loader"),
    [
        ("EFI/Microsoft/Boot/bootmgfw.efi", {}, "windows-boot-manager"),
        (
            "EFI/Linux/linux.efi",
            {"sections": (".text", ".osrel", ".linux", ".initrd")},
            "unified-kernel-image",
        ),
        ("EFI/debian/vmlinuz.efi", {"linux_header": True, "pe_offset": 0x300}, "linux-kernel"),
        ("EFI/tools/shell.efi", {}, "efi-application"),
        ("EFI/tools/driver.efi", {"subsystem": 11}, "not-efi"),
        ("EFI/BOOT/BOOTX64.EFI", {"sections": (".text", ".vendor_cert")}, "shim"),
        ("EFI/BOOT/grub.efi", {"sections": (".text", "mods")}, "grub"),
    ],
)
def test_hand_built_loaders(path: str, pe_kwargs: dict[str, object], loader: str) -> None:
    pe = read_pe_image(BytesSource(make_pe(**pe_kwargs)))  # type: ignore[arg-type]
    assert identify_loader(path, pe) == loader


def test_not_a_pe_file() -> None:
    assert read_pe_image(BytesSource(b"#!/bin/sh\n" * 20)) is None
    assert identify_loader("EFI/BOOT/BOOTX64.EFI", None) == "not-efi"


def test_hostile_headers_are_ignored() -> None:
    good = make_pe()
    beyond = bytearray(good)
    struct.pack_into("<I", beyond, 0x3C, 0x7FFF_FFFF)
    assert read_pe_image(BytesSource(bytes(beyond))) is None
    many = bytearray(good)
    struct.pack_into("<H", many, 0x80 + 6, 0xFFFF)
    assert read_pe_image(BytesSource(bytes(many))) is None
    assert read_pe_image(BytesSource(good[:0x90])) is None
    # A certificate table pointing past the end is not a signature.
    lying = bytearray(good)
    struct.pack_into("<II", lying, 0x80 + 24 + 112 + 4 * 8, 0x10000, 0x7FFF_0000)
    pe = read_pe_image(BytesSource(bytes(lying)))
    assert pe is not None and not pe.signed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_never_escapes(data: st.DataObject, loaders: dict[str, Path]) -> None:
    head = bytearray(loaders["grub-unsigned"].read_bytes()[:8192])
    for _ in range(data.draw(st.integers(1, 20))):
        head[data.draw(st.integers(0, 1023))] = data.draw(st.integers(0, 255))
    try:
        pe = read_pe_image(BytesSource(bytes(head)))
    except ImageFormatError as err:
        assert str(err).endswith(".")
        return
    if pe is not None:
        identify_loader("EFI/BOOT/BOOTX64.EFI", pe)


# --- an ESP -----------------------------------------------------------------------------------


def test_scan_esp(loaders: dict[str, Path], tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "esp.img", 64 << 20)
    run("mkfs.fat", "-F", "32", "-s", "1", image)
    tree = tmp_path / "tree"
    files = {
        "EFI/BOOT/BOOTX64.EFI": loaders["shimx64.efi"].read_bytes(),
        "EFI/BOOT/grubx64.efi": loaders["grubx64.efi"].read_bytes(),
        "EFI/BOOT/BOOTAA64.EFI": make_pe(machine=0xAA64),
        "EFI/BOOT/BOOTIA32.EFI": make_pe(machine=0x8664),  # the wrong machine for its name
        "EFI/systemd/systemd-bootx64.efi": SYSTEMD_BOOT.read_bytes(),
        "EFI/Microsoft/Boot/bootmgfw.efi": make_pe(),
        "EFI/debian/grub.cfg": b"configfile $prefix/grub.cfg\n",
    }
    for path, data in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    mtools("mcopy", "-s", "-Q", "-i", image, tree / "EFI", "::/")
    with FileSource(image) as src:
        found, warnings = scan_esp(src, 1)
    assert warnings == []
    by_path = {f.path: f for f in found}
    assert set(by_path) == {p for p in files if p.endswith((".EFI", ".efi"))}
    shim = by_path["EFI/BOOT/BOOTX64.EFI"]
    assert shim.loader == "shim" and shim.signed and shim.removable_media_path
    assert shim.architecture == "x86_64" and shim.size == len(files["EFI/BOOT/BOOTX64.EFI"])
    assert (
        by_path["EFI/BOOT/grubx64.efi"].loader == "grub"
        and not by_path["EFI/BOOT/grubx64.efi"].removable_media_path
    )
    arm = by_path["EFI/BOOT/BOOTAA64.EFI"]
    assert arm.removable_media_path and arm.architecture == "aarch64"
    assert not by_path["EFI/BOOT/BOOTIA32.EFI"].removable_media_path
    assert by_path["EFI/systemd/systemd-bootx64.efi"].loader == "systemd-boot"
    assert by_path["EFI/Microsoft/Boot/bootmgfw.efi"].loader == "windows-boot-manager"


def test_scan_esp_without_fat_or_efi_directory(tmp_path: Path) -> None:
    found, warnings = scan_esp(BytesSource(bytes(1 << 20)), 2)
    assert found == [] and warnings == ["the EFI System Partition 2 holds no FAT filesystem"]
    image = sparse_file(tmp_path / "empty.img", 8 << 20)
    run("mkfs.fat", image)
    with FileSource(image) as src:
        assert scan_esp(src, 1) == ([], [])
