"""Which firmware an instance starts with: SeaBIOS or OVMF (UEFI), with or without Secure Boot.

The order, first answer wins:

1. what the user said (``run/verify --firmware bios|uefi``, ``--secure-boot``);
2. the registry image's properties, as Nova reads them (nova ``virt/hardware.py``,
   ``get_secure_boot_constraint``; docs ``admin/uefi.html``, ``admin/secure-boot.html``):
   ``hw_firmware_type`` ``bios`` or ``uefi``; ``os_secure_boot=required`` starts OVMF with
   Secure Boot (``optional`` and ``disabled`` leave it off: our OVMF without Secure Boot runs
   a signed chain as well as an unsigned one);
3. the inspection of the base (``disk.survey.required_firmware``): a disk that boots under
   UEFI only gets OVMF; a hybrid or BIOS disk gets SeaBIOS, every hypervisor's default;
   a disk that boots under neither gets SeaBIOS too (the console will say nothing boots).

The choice and its reason are recorded with the run (``ps``) and in ``verify``'s report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from imagewright.errors import InvalidArgumentError

FIRMWARES = ("bios", "uefi")
FIRMWARE_PROPERTY = "hw_firmware_type"
SECURE_BOOT_PROPERTY = "os_secure_boot"
_SECURE_BOOT_VALUES = ("required", "disabled", "optional")


@dataclass(frozen=True)
class FirmwareChoice:
    #: "bios" (SeaBIOS) or "uefi" (OVMF).
    firmware: str
    secure_boot: bool
    #: Where the choice came from ("--firmware uefi", "image property hw_firmware_type=uefi",
    #: "inspection: boots under UEFI only" ...).
    reason: str


def _boots_under(boots_under: tuple[str, ...]) -> str:
    if not boots_under:
        return "boots under neither BIOS nor UEFI"
    if len(boots_under) == 2:
        return "boots under BIOS and UEFI"
    return f"boots under {boots_under[0].upper()} only"


def choose_firmware(
    boots_under: tuple[str, ...],
    needed: str | None,
    properties: Mapping[str, str],
    *,
    firmware: str | None = None,
    secure_boot: bool = False,
) -> FirmwareChoice:
    """The firmware for an instance of a base that boots under ``boots_under`` (and so needs
    ``needed``: ``disk.survey.required_firmware``) and has the registry ``properties`` (module
    docstring); ``firmware``/``secure_boot``: the user's flags."""
    if firmware is not None and firmware not in FIRMWARES:
        raise InvalidArgumentError(f"'{firmware}' is not a firmware; choose bios or uefi.")
    if secure_boot and firmware == "bios":
        raise InvalidArgumentError("Secure Boot needs UEFI firmware; drop --firmware bios.")
    if firmware is not None or secure_boot:
        chosen = firmware or "uefi"
        said = " ".join(
            part
            for part in (f"--firmware {firmware}" if firmware else "", "--secure-boot" * secure_boot)
            if part
        )
        return FirmwareChoice(chosen, secure_boot, said)
    declared = properties.get(FIRMWARE_PROPERTY)
    if declared is not None and declared not in FIRMWARES:
        raise InvalidArgumentError(
            f"The image's {FIRMWARE_PROPERTY} is {declared[:32]!r}, not bios or uefi; "
            "say which firmware to start it with (--firmware)."
        )
    constraint = properties.get(SECURE_BOOT_PROPERTY)
    if constraint is not None and constraint not in _SECURE_BOOT_VALUES:
        raise InvalidArgumentError(
            f"The image's {SECURE_BOOT_PROPERTY} is {constraint[:32]!r}, not one of "
            f"{', '.join(_SECURE_BOOT_VALUES)}."
        )
    if constraint == "required":
        if declared == "bios":
            raise InvalidArgumentError(
                f"The image asks for Secure Boot ({SECURE_BOOT_PROPERTY}=required) under BIOS "
                f"({FIRMWARE_PROPERTY}=bios); Secure Boot needs UEFI."
            )
        return FirmwareChoice("uefi", True, f"image property {SECURE_BOOT_PROPERTY}=required")
    if declared is not None:
        return FirmwareChoice(declared, False, f"image property {FIRMWARE_PROPERTY}={declared}")
    return FirmwareChoice(needed or "bios", False, f"inspection: {_boots_under(boots_under)}")
