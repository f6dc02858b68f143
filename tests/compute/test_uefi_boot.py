"""Built disks booted under real firmware to the test guest's marker line: SeaBIOS and OVMF,
with and without Secure Boot; the firmware refusing an unsigned GRUB under Secure Boot; and a
hybrid disk that went through convert and ``resize +1G`` still booting both ways.

Time (TCG, 2 cores, a busy shared machine): SeaBIOS ~20 s, OVMF ~35-40 s, OVMF with Secure
Boot (q35, SMM) ~40-45 s, a refusal ~8 s; the three tests together about three minutes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import run

from imagewright.compute.boot import BootResult, FirmwareRefusedError, boot
from imagewright.compute.testguest import TestGuest
from imagewright.inspection import inspect_image
from imagewright.ops.build import build
from imagewright.ops.convert import convert
from imagewright.ops.resize import resize

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BOOT_TIMEOUT = 300
SECTOR = 512


def boot_to_marker(image: Path, guest: TestGuest, log: Path, **firmware: object) -> BootResult:
    result = boot(
        image,
        timeout=BOOT_TIMEOUT,
        expect=guest.marker,
        snapshot=True,
        console_log=log,
        **firmware,  # type: ignore[arg-type]
    )
    assert result.matched, "\n".join(result.last_lines)
    return result


@pytest.fixture(scope="module")
def hybrid(testguest_rootfs: TestGuest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("hybrid-boot") / "disk.raw"
    report = build(testguest_rootfs.root, image)
    assert report.firmware == "hybrid" and report.esp is not None and report.esp.secure_boot
    return image


def test_hybrid_boots_under_seabios_and_under_ovmf_with_secure_boot(
    hybrid: Path, testguest_rootfs: TestGuest, tmp_path: Path, run_cli: Callable[..., Result]
) -> None:
    bios = boot_to_marker(hybrid, testguest_rootfs, tmp_path / "bios.log")
    assert bios.firmware == "bios" and bios.firmware_description.startswith("SeaBIOS")
    assert bios.kernel_efi is None and bios.kernel_secure_boot is None  # no UEFI under SeaBIOS
    assert " root=/dev/vda3" in (bios.matched_line or "")
    # The CLI, as a user runs it: the report says which firmware booted and that the kernel was verified.
    log = tmp_path / "secure.log"
    result = run_cli(
        ["boot", "--json", "--snapshot", "--secure-boot", "--timeout", str(BOOT_TIMEOUT),
         "--expect", testguest_rootfs.marker, "--console-log", log, hybrid]
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["firmware"] == "uefi" and report["secure_boot"]
    assert "Secure Boot" in report["firmware_description"]
    assert report["kernel_secure_boot"] == "enabled" and report["secure_boot_verified"]
    assert report["kernel_efi"] == "EDK II" and report["firmware_refusals"] == []
    console = log.read_text(errors="replace")
    assert "Kernel is locked down from EFI Secure Boot" in console
    assert "Debian Secure Boot CA" in console  # the kernel loaded Debian's key (the chain it came by)


def test_unsigned_grub_boots_without_secure_boot_and_is_refused_with_it(
    testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    image = tmp_path / "uefi.raw"
    report = build(testguest_rootfs.root, image, firmware="uefi", efi_loader="unsigned")
    assert report.esp is not None and not report.esp.secure_boot
    plain = boot_to_marker(image, testguest_rootfs, tmp_path / "plain.log", firmware="uefi")
    assert plain.kernel_efi == "EDK II" and plain.kernel_secure_boot == "disabled"
    assert not plain.secure_boot_verified
    # The same disk under Secure Boot: the firmware refuses its boot loader (the check is real).
    log = tmp_path / "refused.log"
    with pytest.raises(FirmwareRefusedError, match="found nothing it would boot") as refused:
        boot(image, timeout=BOOT_TIMEOUT, expect=testguest_rootfs.marker, snapshot=True, console_log=log,
             firmware="uefi", secure_boot=True)  # fmt: skip
    assert any("Access Denied" in line for line in refused.value.result.firmware_refusals)
    console = log.read_text(errors="replace")
    assert "Welcome to GRUB" not in console and "Linux version" not in console


def test_convert_and_resize_keep_both_paths_bootable(
    hybrid: Path, testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    image = tmp_path / "disk.qcow2"
    convert(hybrid, image, output_format="qcow2")
    report = resize(image, "+1G")
    assert report.new_virtual_size == hybrid.stat().st_size + (1 << 30) and report.gpt_backup_moved
    assert report.partition is not None and report.partition.number == 3  # the root, never the ESP
    # The table as sgdisk sees it, and the boot partitions byte for byte as built.
    flat = tmp_path / "flat.raw"
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, flat)
    assert "No problems found" in run("sgdisk", "-v", flat).stdout.decode()
    boot_area = 208896 * SECTOR  # sectors 0..208895: MBR, GPT, BIOS boot partition, ESP
    with hybrid.open("rb") as before, flat.open("rb") as after:
        assert before.read(440) == after.read(440)
        before.seek(2048 * SECTOR)
        after.seek(2048 * SECTOR)
        assert before.read(boot_area - 2048 * SECTOR) == after.read(boot_area - 2048 * SECTOR)
    disk = inspect_image(image).disk
    assert disk is not None and disk.boot is not None and disk.boot.boots_under == ["bios", "uefi"]
    flat.unlink()
    bios = boot_to_marker(image, testguest_rootfs, tmp_path / "bios.log")
    assert " root=/dev/vda3" in (bios.matched_line or "")
    secure = boot_to_marker(
        image, testguest_rootfs, tmp_path / "secure.log", firmware="uefi", secure_boot=True
    )
    assert secure.secure_boot_verified
