"""The Glance properties ``ops.inspect_os.properties`` derives: firmware from a boot summary, the
audit's summary and the secret kinds read back from it, and "not audited" for what cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.guest.images import flat_ext4, write

from imagewright.disk.bootcode import BootCode
from imagewright.disk.efiboot import EfiBootFile
from imagewright.disk.survey import BootSummary
from imagewright.inspection import inspect_image
from imagewright.ops.audit.checks import CHECKS
from imagewright.ops.audit.model import AuditReport, Finding, RootAudit, Severity
from imagewright.ops.inspect_os.properties import (
    MAX_SUMMARY,
    audit_secrets,
    audit_summary,
    firmware_properties,
    image_facts,
)

GRUB = BootCode("grub2", "GRUB 2")
NONE = BootCode("none", "no boot code")
MS_CA = "Microsoft Corporation UEFI CA 2011"


def loader(
    kind: str = "shim", *, signed: bool = True, signer: str = MS_CA, arch: str = "x86_64"
) -> EfiBootFile:
    return EfiBootFile(
        partition=1,
        path="EFI/BOOT/BOOTX64.EFI",
        size=1000,
        loader=kind,
        architecture=arch,
        signed=signed,
        certificate_names=[signer] if signed else [],
        removable_media_path=True,
    )


def summary(code: BootCode, *files: EfiBootFile) -> BootSummary:
    boot = BootSummary(code=code, efi_files=list(files))
    boot.uefi_architectures = sorted({f.architecture for f in files if f.architecture})
    boot.boots_under = [n for n, ok in (("bios", code.bios_bootable), ("uefi", bool(files))) if ok]
    return boot


@pytest.mark.parametrize(
    ("boot", "expected"),
    [
        (None, {}),
        (summary(NONE), {}),
        (summary(GRUB), {}),
        # Hybrid: BIOS is every hypervisor's default, nothing to ask for.
        (summary(GRUB, loader()), {}),
        (
            summary(NONE, loader()),
            {"hw_firmware_type": "uefi", "hw_machine_type": "q35", "os_secure_boot": "optional"},
        ),
        (summary(NONE, loader("grub", signed=False)), {"hw_firmware_type": "uefi", "hw_machine_type": "q35"}),
        # Signed, but not by a key firmware trusts out of the box: no Secure Boot promise.
        (summary(NONE, loader(signer="My Own CA")), {"hw_firmware_type": "uefi", "hw_machine_type": "q35"}),
        # aarch64: UEFI, and no q35 (that is an x86 machine type).
        (summary(NONE, loader(arch="aarch64")), {"hw_firmware_type": "uefi", "os_secure_boot": "optional"}),
    ],
)
def test_firmware_properties(boot: BootSummary | None, expected: dict[str, str]) -> None:
    assert firmware_properties(boot) == expected


def audit_of(*checks: tuple[str, Severity], incomplete: tuple[str, ...] = ()) -> AuditReport:
    root = RootAudit("partition 1", incomplete=list(incomplete))
    root.findings = [Finding(name, severity, f"/{name}", "found", None) for name, severity in checks]
    return AuditReport(roots=[root])


def test_audit_summary_and_secrets_round_trip() -> None:
    assert audit_summary(audit_of()) == "clean"
    assert (
        audit_secrets("clean") == [] and audit_secrets(None) == [] and audit_secrets("not audited: x") == []
    )
    assert audit_summary(AuditReport()) == "not audited: no Linux root filesystem"
    found = audit_of(
        ("ssh-host-keys", Severity.SECRET),
        ("ssh-host-keys", Severity.SECRET),
        ("machine-id", Severity.IDENTITY),
        ("logfiles", Severity.RESIDUE),
        ("authorized-keys", Severity.SECRET),
    )
    text = audit_summary(found)
    assert text == (
        "secret: authorized-keys, ssh-host-keys; identity: machine-id; residue: logfiles (5 findings)"
    )
    assert audit_secrets(text) == ["authorized-keys", "ssh-host-keys"]
    assert audit_secrets(audit_summary(audit_of(("machine-id", Severity.IDENTITY)))) == []
    unfinished = audit_summary(audit_of(incomplete=("tmp",)))
    assert unfinished == "unfinished: tmp" and audit_secrets(unfinished) == []


def test_every_check_at_once_fits_whole() -> None:
    text = audit_summary(audit_of(*((check.name, check.severity) for check in CHECKS)))
    assert len(text) <= MAX_SUMMARY and not text.endswith("...")
    assert set(audit_secrets(text)) == {c.name for c in CHECKS if c.severity is Severity.SECRET}


@pytest.mark.integration
def test_an_image_without_a_linux_root_is_not_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write(data, "README", "just data\n")
    image = flat_ext4(data, tmp_path / "data.raw").path
    facts = image_facts(image, inspect_image(image))
    assert facts.properties["imagewright_audit"].startswith("not audited: ")
    assert facts.secrets == [] and "os_distro" not in facts.properties


@pytest.mark.integration
def test_random_bytes_are_not_audited(tmp_path: Path) -> None:
    image = tmp_path / "noise.raw"
    image.write_bytes(bytes(range(256)) * 4096)
    facts = image_facts(image, inspect_image(image))
    assert facts.properties == {"imagewright_audit": facts.properties["imagewright_audit"]}
    assert facts.properties["imagewright_audit"].startswith("not audited: ")
