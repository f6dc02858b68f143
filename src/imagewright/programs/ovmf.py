"""OVMF (Debian ``ovmf``): UEFI firmware for QEMU's x86_64 machines, with and without Secure Boot.

OVMF comes as two flash images (edk2 ``OvmfPkg/README``): the firmware code, mapped read-only
as pflash unit 0, and a variable store (NVRAM: boot entries, Secure Boot keys) as pflash unit
1, which the firmware writes to. Each boot gets its own copy of the variable store template,
so no boot sees what another wrote (``compute/boot.py`` makes and removes the copy).

Debian 12's ovmf 2022.11 ships (``/usr/share/qemu/firmware/*.json`` describes them)::

    OVMF_CODE_4M.fd          no Secure Boot, no SMM; pc (i440fx) or q35
    OVMF_VARS_4M.fd          empty variable store
    OVMF_CODE_4M.ms.fd       -> OVMF_CODE_4M.secboot.fd: Secure Boot, needs SMM (q35,smm=on)
    OVMF_VARS_4M.ms.fd       Microsoft's KEK and db keys enrolled, Secure Boot enabled

With the ``.ms`` pair the firmware runs only EFI binaries signed by a key in db — Microsoft's
UEFI CA 2011 signs shim, shim carries Debian's CA and checks GRUB and the kernel — exactly as
on a cloud host with Secure Boot. The secure firmware keeps its variables in SMM, so the
machine needs ``-machine q35,smm=on`` and ``-global driver=cfi.pflash01,property=secure,value=on``
(``programs/qemu_system.py``), or it stops before printing anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import ProgramNotFoundError

OVMF_DIRECTORY = Path("/usr/share/OVMF")
#: Another directory holding the same file names (tests; other distributions).
OVMF_DIRECTORY_VARIABLE = "IMAGEWRIGHT_OVMF_DIR"
OVMF_PACKAGE = "ovmf"

_PLAIN = ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")
_SECURE = ("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd")


@dataclass(frozen=True)
class OvmfFirmware:
    """The firmware code and the variable store template of one OVMF flavour."""

    code: Path
    variables_template: Path
    secure_boot: bool

    @property
    def description(self) -> str:
        if self.secure_boot:
            return f"OVMF UEFI with Secure Boot, Microsoft keys enrolled ({self.code.resolve().name})"
        return f"OVMF UEFI ({self.code.name})"


def find_ovmf(*, secure_boot: bool, directory: Path | None = None) -> OvmfFirmware:
    """The OVMF flash images for a boot with or without Secure Boot.

    Raises ProgramNotFoundError (one sentence naming the Debian package) when they are missing.
    """
    found = directory or Path(os.environ.get(OVMF_DIRECTORY_VARIABLE, OVMF_DIRECTORY))
    code_name, vars_name = _SECURE if secure_boot else _PLAIN
    code, variables = found / code_name, found / vars_name
    for path in (code, variables):
        if not path.is_file():
            what = "with Secure Boot " if secure_boot else ""
            raise ProgramNotFoundError(
                f"The UEFI firmware {what}for QEMU is not installed ({path} is missing); "
                f"install the Debian package '{OVMF_PACKAGE}'."
            )
    return OvmfFirmware(code, variables, secure_boot)
