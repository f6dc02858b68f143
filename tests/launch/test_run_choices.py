"""run's firmware, disk size and project, against a registry started as a process, without a boot.

QEMU really runs (TCG) on 1 MiB blank registry images, as in ``test_lifecycle``: what firmware
it was started with is read from its own /proc command line (the pflash drives, the machine),
the overlay's size from ``qemu-img info``, the owner from ``instance show``; ``ps`` must say
the same. Each instance is removed as soon as it is checked (OVMF spins on a blank disk).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.metadata_service import IMAGE_BYTES, MetadataStack
from tests.fixtures.tools import run
from tests.guest.images import flat_ext4, write
from tests.launch.conftest import iw, iw_json, ps, state_of

from imagewright.compute.instance import default_cpus
from imagewright.programs.ovmf import find_ovmf
from imagewright.service.launch.images import base_from_file, boots_systemd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def registry_image(stack: MetadataStack, name: str, **properties: str) -> str:
    with stack.server.api(stack.server.token()) as admin:
        image = admin.create_image(name=name, disk_format="raw", container_format="bare", **properties)
        assert admin.upload(image["id"], IMAGE_BYTES).status_code == 204
    return str(image["id"])


def pflash_files(argv: list[str]) -> list[str]:
    drives = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-drive"]
    return [d.rsplit("file=", 1)[1] for d in drives if d.startswith("if=pflash")]


Launched = tuple[dict[str, Any], dict[str, Any], list[str]]


def launched_and_removed(stack: MetadataStack, *args: str) -> Launched:
    """Run, read what ps and /proc say of it, remove it: (run's JSON, ps row, QEMU's argv)."""
    launched = iw_json(stack, "run", *args, "--detach")
    try:
        row = state_of(stack, launched["id"])
        assert row is not None and row["state"] == "running"
        argv = cmdline(row["qemu_pid"])
    finally:
        iw(stack, "rm", "--force", launched["id"])
    return launched, row, argv


def test_the_firmware_comes_from_the_flags_then_the_image_properties_then_the_inspection(
    stack: MetadataStack,
) -> None:
    registry_image(stack, "blank-uefi", hw_firmware_type="uefi")
    registry_image(stack, "blank-sb", hw_firmware_type="uefi", os_secure_boot="required")
    plain, secure = find_ovmf(secure_boot=False), find_ovmf(secure_boot=True)

    # The property: OVMF, with the instance's own copy of the variable store.
    launched = iw_json(stack, "run", "blank-uefi", "--detach")
    row = state_of(stack, launched["id"])
    assert row is not None
    assert (launched["firmware"], launched["secure_boot"]) == ("uefi", False)
    assert launched["firmware_reason"] == "image property hw_firmware_type=uefi"
    assert (row["firmware"], row["secure_boot"], row["firmware_reason"]) == (
        "uefi", False, "image property hw_firmware_type=uefi",
    )  # fmt: skip
    argv = cmdline(row["qemu_pid"])
    variables = Path(launched["directory"]) / "OVMF_VARS.fd"
    assert pflash_files(argv) == [str(plain.code), str(variables)]
    assert argv[argv.index("-machine") + 1] == "q35"  # AHCI: OVMF leaves PIIX's IDE unusable
    assert variables.stat().st_size == plain.variables_template.stat().st_size
    human = iw(stack, "ps").stdout
    assert any(line.startswith(launched["id"]) and " OVMF " in line for line in human.splitlines()), human
    iw(stack, "rm", "--force", launched["id"])
    assert not Path(launched["directory"]).exists()

    # The flag beats the property.
    launched, row, argv = launched_and_removed(stack, "blank-uefi", "--firmware", "bios")
    assert (row["firmware"], row["firmware_reason"]) == ("bios", "--firmware bios")
    assert pflash_files(argv) == []

    # os_secure_boot=required: OVMF with Microsoft's keys on q35 with SMM.
    launched, row, argv = launched_and_removed(stack, "blank-sb")
    assert (row["firmware"], row["secure_boot"]) == ("uefi", True)
    assert row["firmware_reason"] == "image property os_secure_boot=required"
    assert pflash_files(argv)[0] == str(secure.code)
    assert argv[argv.index("-machine") + 1].startswith("q35,smm=on")

    # No property, a blank disk: the inspection finds no boot loader; SeaBIOS.
    launched, row, argv = launched_and_removed(stack, "tiny")
    assert row["firmware"] == "bios"
    assert row["firmware_reason"] == "inspection: boots under neither BIOS nor UEFI"
    assert pflash_files(argv) == []

    # --secure-boot alone means OVMF with Secure Boot.
    launched, row, argv = launched_and_removed(stack, "tiny", "--secure-boot")
    assert (row["firmware"], row["secure_boot"], row["firmware_reason"]) == ("uefi", True, "--secure-boot")
    assert ps(stack) == {"instances": [], "orphans": []}


def test_impossible_firmware_requests_are_one_sentence_and_create_nothing(stack: MetadataStack) -> None:
    registry_image(stack, "blank-floppy", hw_firmware_type="floppy")
    registry_image(stack, "blank-bios-sb", hw_firmware_type="bios", os_secure_boot="required")
    cases = {
        ("tiny", "--firmware", "bios", "--secure-boot"): (
            "Secure Boot needs UEFI firmware; drop --firmware bios."
        ),
        ("blank-floppy",): "The image's hw_firmware_type is 'floppy', not bios or uefi; "
        "say which firmware to start it with (--firmware).",
        ("blank-bios-sb",): "The image asks for Secure Boot (os_secure_boot=required) under BIOS "
        "(hw_firmware_type=bios); Secure Boot needs UEFI.",
    }
    for args, sentence in cases.items():
        result = iw(stack, "run", *args, "--detach", check=False)
        assert result.returncode != 0
        assert result.stderr.strip() == f"imagewright: error: {sentence}", result.stderr
    # the flag overrides a property it could not have used
    _, row, _ = launched_and_removed(stack, "blank-floppy", "--firmware", "uefi")
    assert row["firmware"] == "uefi"
    assert ps(stack) == {"instances": [], "orphans": []}
    assert list((stack.server.data_dir / "instances").iterdir()) == []


def test_disk_size_makes_the_overlay_bigger_never_smaller(stack: MetadataStack) -> None:
    launched = iw_json(stack, "run", "tiny", "--disk-size", "8M", "--detach")
    try:
        overlay = Path(launched["directory"]) / "disk.qcow2"
        info = json.loads(run("qemu-img", "info", "-U", "--output=json", overlay).stdout)
        assert info["virtual-size"] == launched["disk_size"] == 8 << 20
    finally:
        iw(stack, "rm", "--force", launched["id"])
    result = iw(stack, "run", "tiny", "--disk-size", "512K", "--detach", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "imagewright: error: The disk size 512 KiB is smaller than the image's 1 MiB; "
        "an instance's disk can only be bigger."
    ), result.stderr
    assert ps(stack) == {"instances": [], "orphans": []}


def test_run_for_another_project_sees_only_that_projects_images(stack: MetadataStack) -> None:
    iw(stack, "accounts", "project", "add", "launch-demo")
    demo = json.loads(iw(stack, "accounts", "project", "list", "--json").stdout)
    demo_id = next(p["id"] for p in demo if p["name"] == "launch-demo")
    registry_image(stack, "admins-private", visibility="private")

    launched = iw_json(stack, "run", "tiny", "--project", "launch-demo", "--detach")
    try:
        shown = json.loads(iw(stack, "instance", "show", launched["id"], "--json").stdout)
        assert shown["project_id"] == demo_id
        listed = json.loads(iw(stack, "instance", "list", "--project", "launch-demo", "--json").stdout)
        assert [row["id"] for row in listed] == [launched["id"]]
    finally:
        iw(stack, "rm", "--force", launched["id"])

    hidden = iw(stack, "run", "admins-private", "--project", "launch-demo", "--detach", check=False)
    assert hidden.returncode != 0
    assert hidden.stderr.strip() == "imagewright: error: No image 'admins-private' is visible to the project."
    # the operator (no --project: the admin project) sees every image
    _, row, _ = launched_and_removed(stack, "admins-private")
    assert row["state"] == "running"
    unknown = iw(stack, "run", "tiny", "--project", "nosuch", "--detach", check=False)
    assert unknown.stderr.strip() == "imagewright: error: There is no project 'nosuch'."
    assert ps(stack) == {"instances": [], "orphans": []}


def test_a_guest_without_systemd_gets_one_vcpu_unless_cpus_says_otherwise(stack: MetadataStack) -> None:
    """Without --cpus: ``default_cpus`` — the blank registry image boots no systemd, so one
    vCPU, as QEMU's own command line, run's JSON and ps all say; --cpus wins."""
    launched, row, argv = launched_and_removed(stack, "tiny")
    assert argv[argv.index("-smp") + 1] == "1"
    assert launched["cpus"] == row["cpus"] == 1
    if launched["accelerator"] == "tcg":
        assert launched["cpus_reason"] == "TCG, the guest does not boot systemd: one vCPU"
    launched, row, argv = launched_and_removed(stack, "tiny", "--cpus", "3")
    assert argv[argv.index("-smp") + 1] == "3"
    assert (launched["cpus"], row["cpus"], launched["cpus_reason"]) == (3, 3, "--cpus")
    assert ps(stack) == {"instances": [], "orphans": []}


@pytest.mark.parametrize(
    ("accelerator", "systemd", "host_cpus", "cpus"),
    [
        ("tcg", True, 1, 1),
        ("tcg", True, 2, 2),
        ("tcg", True, 16, 2),
        ("tcg", False, 16, 1),
        ("kvm", True, 16, 1),
    ],
)
def test_default_cpus_is_two_host_cores_for_systemd_under_tcg_else_one(
    accelerator: str, systemd: bool, host_cpus: int, cpus: int
) -> None:
    assert default_cpus(accelerator, systemd=systemd, host_cpus=host_cpus)[0] == cpus


@pytest.mark.parametrize(
    ("init", "systemd"),
    [
        ("/lib/systemd/systemd", True),
        ("../lib/systemd/systemd", True),
        ("/bin/busybox", False),
        (None, False),
    ],
)
def test_boots_systemd_reads_the_guests_init_link(tmp_path: Path, init: str | None, systemd: bool) -> None:
    root = tmp_path / "tree"
    write(root, "etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    write(root, "lib/systemd/systemd", "")
    if init is not None:
        (root / "sbin").mkdir()
        (root / "sbin/init").symlink_to(init)
    image = flat_ext4(root, tmp_path / "guest.raw")
    assert boots_systemd(base_from_file(image.path)) is systemd
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(1 << 20))
    assert boots_systemd(base_from_file(blank)) is False


@pytest.mark.parametrize(("recorded", "systemd"), [("systemd", True), ("SystemD ", True), ("busybox", False)])
def test_a_registry_image_s_recorded_init_system_is_believed_without_opening_it(
    tmp_path: Path, recorded: str, systemd: bool
) -> None:
    # The file is a blank disk: read, it would say "not systemd".
    blank = tmp_path / "blank.raw"
    blank.write_bytes(bytes(1 << 20))
    base = dataclasses.replace(base_from_file(blank), properties={"imagewright_init_system": recorded})
    assert boots_systemd(base) is systemd
