"""The architecture of a guest from the ELF header of one of its programs.

Source: the System V ABI, ELF header (``e_ident``: magic ``\\x7fELF``, EI_CLASS at 4 (1 32-bit,
2 64-bit), EI_DATA at 5 (1 little, 2 big endian); ``e_machine`` a 16-bit field at offset 18
in that byte order); machine numbers from glibc's ``elf.h``. Names are what ``uname -m`` says
and Glance's ``architecture`` property expects.

NOTE: only the first 20 bytes are looked at, each checked; anything else is "not an ELF file".
"""

from __future__ import annotations

from imagewright.guest.bounded import GuestReader

ELF_MAGIC = b"\x7fELF"
HEADER_BYTES = 20
#: The largest program read for its header (busybox and systemd are a few MiB at most).
MAX_PROGRAM = 32 * 1024 * 1024

#: Programs every Linux userland has, in the order they are believed.
PROGRAMS = ("/sbin/init", "/usr/lib/systemd/systemd", "/bin/busybox", "/bin/sh", "/usr/bin/env", "/bin/ls")

EM_386, EM_MIPS, EM_PPC, EM_PPC64, EM_S390, EM_ARM = 3, 8, 20, 21, 22, 40
EM_X86_64, EM_AARCH64, EM_RISCV, EM_LOONGARCH = 62, 183, 243, 258


def architecture(header: bytes) -> str | None:
    """``uname -m`` of the machine an ELF file is for; None when it is not ELF or unknown."""
    if len(header) < HEADER_BYTES or header[:4] != ELF_MAGIC:
        return None
    elf_class, data = header[4], header[5]
    if elf_class not in (1, 2) or data not in (1, 2):
        return None
    bits64 = elf_class == 2
    little = data == 1
    machine = int.from_bytes(header[18:20], "little" if little else "big")
    if machine == EM_X86_64:
        return "x86_64"
    if machine == EM_386:
        return "i686"
    if machine == EM_AARCH64:
        return "aarch64" if little else "aarch64_be"
    if machine == EM_ARM:
        return "armv7l" if little else "armv7b"
    if machine == EM_PPC64:
        return "ppc64le" if little else "ppc64"
    if machine == EM_PPC:
        return "ppc"
    if machine == EM_S390:
        return "s390x" if bits64 else "s390"
    if machine == EM_RISCV:
        return "riscv64" if bits64 else "riscv32"
    if machine == EM_MIPS:
        return ("mips64" if bits64 else "mips") + ("el" if little else "")
    if machine == EM_LOONGARCH:
        return "loongarch64"
    return None


def read_architecture(reader: GuestReader) -> tuple[str | None, str | None]:
    """``(architecture, the program it was read from)``: the first program in ``PROGRAMS``
    (links followed inside the guest) that is an ELF file for a known machine."""
    for program in PROGRAMS:
        real = reader.resolve(program)
        if real is None:
            continue
        data = reader.read(real, MAX_PROGRAM, "a program")
        if data is None:
            continue
        found = architecture(data[:HEADER_BYTES])
        if found is not None:
            return found, program if real == program else f"{program} -> {real}"
        if data[:2] != b"#!":
            reader.note(f"{real} is not an ELF program of a known machine")
    return None, None
