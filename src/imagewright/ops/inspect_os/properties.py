"""The Glance image properties a registry fills in from what is inside an image.

    from imagewright.ops.inspect_os.properties import image_facts
    facts = image_facts("disk.qcow2", report)     # report: the gate's inspection of the image
    facts.properties    # {"os_distro": "debian", "os_version": "12", "architecture": "x86_64", ...}
    facts.secrets       # ["ssh-host-keys", "authorized-keys"]: what would leak if published

Sources for the names and values:

- Glance, "Useful image properties" (admin/useful-image-properties): ``architecture`` in
  libosinfo's vocabulary (``x86_64``, ``aarch64``, ``i686``, ``ppc64le``, ``s390x``: what
  ``uname -m`` says, which is what ``inspect_os.elf`` reads from the ELF header), ``os_distro``
  lowercase in libosinfo's vocabulary (``arch``, ``centos``, ``debian``, ``fedora``,
  ``opensuse``, ``rhel``, ``rocky``, ``sled``, ``ubuntu`` ...; ``Distribution.os_distro`` maps
  os-release ids onto it, Alpine as libosinfo's ``alpinelinux``), ``os_version`` "as specified by
  the distributor" (os-release ``VERSION_ID``), ``os_type`` ``linux`` or ``windows``.
- Nova, admin/uefi.rst: ``hw_firmware_type=uefi`` makes libvirt start the guest with UEFI
  firmware; BIOS is the default, so a disk that boots under BIOS (hybrid disks too) needs
  nothing. "For x86_64 guests, using the q35 machine type is recommended when enabling UEFI
  ... q35 is required when combining UEFI with Secure Boot": a UEFI-only x86_64 disk gets
  ``hw_machine_type=q35`` as well.
- Nova, admin/secure-boot.rst: ``os_secure_boot`` is ``required``, ``disabled`` (the default)
  or ``optional`` — "secure boot will only be enabled if the host supports this feature and
  the other constraints, namely that a UEFI guest bootloader is configured, are met".
  ``optional`` is what a disk whose removable-media loader carries a Microsoft UEFI CA
  signature (Debian's signed shim, Windows Boot Manager) can promise: it boots with Secure
  Boot where the host offers it and without where not. ``required`` would make the image
  unschedulable on hosts without Secure Boot, which is the operator's choice, not ours.

The audit (``ops.audit``) is summed up in one short property, ``imagewright_audit``:
"clean", or the kinds of findings by severity ("secret: ssh-host-keys, authorized-keys;
identity: machine-id (5 findings)"), or "not audited: why". ``audit_secrets`` reads the secret
kinds back from that summary: the registry refuses to publish an image whose summary names
secrets (see ``service.images.publishing``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imagewright.disk.survey import BootSummary, required_firmware
from imagewright.errors import ImagewrightError
from imagewright.ops.audit.model import AuditReport, Severity

if TYPE_CHECKING:
    from imagewright.inspection import ImageReport
    from imagewright.ops.inspect_os import OsInspection

#: The property holding the audit's summary (written by the registry only).
AUDIT_PROPERTY = "imagewright_audit"
#: The owner's explicit "publish it anyway" (see ``service.images.publishing``).
ALLOW_SECRETS_PROPERTY = "imagewright_allow_secrets"
#: The guest's init system (``systemd``, ``sysvinit``, ``busybox`` ...: ``OsFacts.init_system``),
#: which ``run``/``verify`` read to size an instance without opening the image again.
INIT_SYSTEM_PROPERTY = "imagewright_init_system"
#: Every property ``image_facts`` may fill in.
FILLED = (
    "os_distro",
    "os_version",
    "architecture",
    "os_type",
    INIT_SYSTEM_PROPERTY,
    "hw_firmware_type",
    "hw_machine_type",
    "os_secure_boot",
    AUDIT_PROPERTY,
)
CLEAN = "clean"
NOT_AUDITED = "not audited"
#: The summary's longest form (Glance allows 64 KiB per value; a summary is a glance, not a
#: report). Every check's name once fits (16 checks, about 300 characters).
MAX_SUMMARY = 512
#: Text in a signature's certificate names that the firmware of a public cloud trusts by default
#: (the Microsoft UEFI CA that signs shim; Microsoft's Windows PCA that signs its boot manager).
_TRUSTED_SIGNER = "Microsoft"
#: os-release values are the guest's: a hostile one is cut, never stored whole.
_MAX_VALUE = 255


@dataclass
class ImageFacts:
    """What the registry learns from an image: properties to fill in, secrets it would leak."""

    properties: dict[str, str] = field(default_factory=dict)
    #: The audit checks of the "secret" class that found something (empty: none, or not audited).
    secrets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def firmware_properties(boot: BootSummary | None) -> dict[str, str]:
    """``hw_firmware_type`` (and ``hw_machine_type``, ``os_secure_boot``) for a disk that boots
    under UEFI only; nothing for BIOS and hybrid disks (BIOS is every hypervisor's default)."""
    if boot is None or required_firmware(boot) != "uefi":
        return {}
    properties = {"hw_firmware_type": "uefi"}
    if boot.uefi_architectures == ["x86_64"]:
        properties["hw_machine_type"] = "q35"
    loaders = [f for f in boot.efi_files if f.removable_media_path and f.loader != "not-efi"]
    if loaders and all(
        f.signed and any(_TRUSTED_SIGNER in name for name in f.certificate_names) for f in loaders
    ):
        properties["os_secure_boot"] = "optional"
    return properties


def os_properties(inspection: OsInspection) -> dict[str, str]:
    """``os_distro``, ``os_version``, ``architecture``, ``os_type`` and the init system of the
    first root that says which distribution it is (a disk with several roots is named by its
    first)."""
    roots = [root for root in inspection.roots if root.distribution.id is not None] or inspection.roots
    if not roots:
        return {}
    root = roots[0]
    found = {
        "os_distro": root.distribution.os_distro,
        "os_version": root.distribution.version_id,
        "architecture": root.architecture,
        "os_type": root.os_type,
        INIT_SYSTEM_PROPERTY: root.init_system,
    }
    return {name: value[:_MAX_VALUE] for name, value in found.items() if value}


def audit_summary(audit: AuditReport) -> str:
    """ "clean", or the kinds of findings by severity, in at most ``MAX_SUMMARY`` characters."""
    if not audit.roots:
        return f"{NOT_AUDITED}: no Linux root filesystem"
    findings = audit.findings
    incomplete = sorted({name for root in audit.roots for name in root.incomplete})
    if not findings and not incomplete:
        return CLEAN
    parts = []
    for severity in Severity:
        kinds = sorted({f.check for f in findings if f.severity is severity})
        if kinds:
            parts.append(f"{severity.value}: {', '.join(kinds)}")
    if incomplete:
        parts.append(f"unfinished: {', '.join(incomplete)}")
    text = "; ".join(parts) + (f" ({len(findings)} findings)" if findings else "")
    if len(text) > MAX_SUMMARY:
        # The secret kinds come first and are what the publish check reads: keep them whole.
        text = text[: MAX_SUMMARY - 3].rsplit(";", 1)[0] + " ..."
    return text


def audit_secrets(summary: str | None) -> list[str]:
    """The secret kinds an ``audit_summary`` names (none for "clean" or "not audited")."""
    if not summary:
        return []
    for part in summary.split(";"):
        label, sep, kinds = part.strip().partition(": ")
        if sep and label == Severity.SECRET.value:
            return [kind.strip() for kind in kinds.split(",") if kind.strip()]
    return []


def image_facts(image: str | os.PathLike[str], report: ImageReport) -> ImageFacts:
    """The properties of ``image`` (a local file the gate admitted; ``report`` its inspection):
    firmware from the disk survey, OS facts and the audit from its root filesystems.

    Never raises for what the image holds: an image whose filesystems cannot be read is still
    an image, so the audit becomes "not audited: why" and the other properties stay unset.
    """
    from imagewright.ops.inspect_os import inspect_os

    facts = ImageFacts(properties=firmware_properties(report.disk.boot if report.disk else None))
    try:
        inspection = inspect_os(image, facts=True, audit=True)
    except ImagewrightError as err:
        facts.notes.append(str(err))
        facts.properties[AUDIT_PROPERTY] = _not_audited(str(err))
        return facts
    facts.properties.update(os_properties(inspection))
    audit = inspection.audit or AuditReport()
    if not audit.roots and inspection.notes:
        facts.properties[AUDIT_PROPERTY] = _not_audited(inspection.notes[0])
    else:
        facts.properties[AUDIT_PROPERTY] = audit_summary(audit)
    facts.secrets = audit_secrets(facts.properties[AUDIT_PROPERTY])
    facts.notes.extend(inspection.notes)
    return facts


def _not_audited(reason: str) -> str:
    text = f"{NOT_AUDITED}: {reason.rstrip('.')}"
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 3] + "..."


__all__ = [
    "ALLOW_SECRETS_PROPERTY",
    "AUDIT_PROPERTY",
    "FILLED",
    "INIT_SYSTEM_PROPERTY",
    "ImageFacts",
    "audit_secrets",
    "audit_summary",
    "firmware_properties",
    "image_facts",
    "os_properties",
]
