"""Each disk format's probe: its signature, and the check that a file carries it.

A reader module's ``probe`` is the function here (``qcow2.probe is probes.qcow2``); they live
together, apart from the readers, so that ``registry`` can ask every format whether it claims a
file (it asks all of them, to refuse a file two formats claim) without importing every reader:
``imagewright inspect one.qcow2`` loads the qcow2 reader only (tests/test_cli_startup.py).
The readers take their signatures from here, so a magic number is written once.

Sources, per function: QEMU 7.2 ``block/*.c``, the driver's ``bdrv_probe``
(``qemu_probe.py`` models QEMU's scores for all drivers; these are our readers' own tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagewright.binary import PrefixExhaustedError

if TYPE_CHECKING:
    from imagewright.binary import ByteSource

#: qcow (version 1) and qcow2 (version ≥ 2) share the magic 'QFI\xfb' (``QCOW_MAGIC``).
QCOW_MAGIC = b"QFI\xfb"
QCOW_VERSION = 1
VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_COWD_MAGIC = b"COWD"
#: VDI's u32 little-endian signature at 0x40, in a 512-byte header.
VDI_SIGNATURE = 0xBEDA107F
VDI_HEADER_SIZE = 512
VHDX_SIGNATURE = b"vhdxfile"
VHD_COOKIE = b"conectix"
VHD_FOOTER_SIZE = 512
VHD_FIXED = 2
QED_MAGIC = b"QED\0"
PARALLELS_MAGIC_OLD = b"WithoutFreeSpace"
PARALLELS_MAGIC_EXT = b"WithouFreSpacExt"
PARALLELS_VERSION = 2
PARALLELS_HEADER_SIZE = 64
LUKS_MAGIC = b"LUKS\xba\xbe"
LUKS_VERSION = 1


def qcow2(src: ByteSource, head: bytes) -> bool:
    """qcow2 magic with version ≥ 2 (QEMU's ``qcow2_probe``; version 1 is ``qcow``)."""
    return len(head) >= 8 and head[:4] == QCOW_MAGIC and int.from_bytes(head[4:8], "big") >= 2


def qcow(src: ByteSource, head: bytes) -> bool:
    """qcow magic with version 1 (QEMU's ``qcow_probe``)."""
    return len(head) >= 8 and head[:4] == QCOW_MAGIC and int.from_bytes(head[4:8], "big") == QCOW_VERSION


def vmdk_descriptor(head: bytes) -> bool:
    """QEMU's text probe: skip ``#`` comment lines and blank lines, then ``version=1|2|3``."""
    position = 0
    end = len(head)
    while position < end:
        char = head[position : position + 1]
        if char == b"#":
            newline = head.find(b"\n", position)
            if newline < 0:
                return False
            position = newline + 1
            continue
        if char == b" ":
            while position < end and head[position : position + 1] == b" ":
                position += 1
            if position < end and head[position : position + 1] == b"\r":
                position += 1
            if position == end or head[position : position + 1] != b"\n":
                return False
            position += 1
            continue
        rest = head[position : position + 11]
        return any(
            rest.startswith(f"version={version}{ending}".encode())
            for version in (1, 2, 3)
            for ending in ("\n", "\r\n")
        )
    return False


def vmdk(src: ByteSource, head: bytes) -> bool:
    """KDMV or COWD magic, or a text descriptor (QEMU's ``vmdk_probe``)."""
    return head[:4] in (VMDK_SPARSE_MAGIC, VMDK_COWD_MAGIC) or vmdk_descriptor(head)


def vdi(src: ByteSource, head: bytes) -> bool:
    """The signature at 0x40 in a full 512-byte header (QEMU's ``vdi_probe``)."""
    return len(head) >= VDI_HEADER_SIZE and int.from_bytes(head[0x40:0x44], "little") == VDI_SIGNATURE


def vhdx(src: ByteSource, head: bytes) -> bool:
    """The 'vhdxfile' signature at offset 0 (QEMU's ``vhdx_probe``)."""
    return head[:8] == VHDX_SIGNATURE


def vhd(src: ByteSource, head: bytes) -> bool:
    """A footer cookie at offset 0 (QEMU's ``vpc_probe``) or, for fixed disks, at EOF-512.

    QEMU itself only looks at offset 0, so it calls a fixed VHD "raw"; recognising the
    trailing footer keeps the footer from being mistaken for guest data.
    """
    if head[:8] == VHD_COOKIE:
        return True
    if src.size < VHD_FOOTER_SIZE:
        return False
    try:
        tail = src.pread(src.size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE)
    except PrefixExhaustedError:
        # The end of a compressed stream is out of reach: judge it by its start, as QEMU does.
        return False
    # Cookie and disk type 2 make a fixed VHD (a bad checksum is reported by open_image).
    return (
        len(tail) == VHD_FOOTER_SIZE
        and tail[:8] == VHD_COOKIE
        and tail[60:64] == VHD_FIXED.to_bytes(4, "big")
    )


def qed(src: ByteSource, head: bytes) -> bool:
    """The 'QED\\0' magic (QEMU's ``bdrv_qed_probe``)."""
    return head[:4] == QED_MAGIC


def parallels(src: ByteSource, head: bytes) -> bool:
    """Either magic with version 2 (QEMU's ``parallels_probe``)."""
    return (
        len(head) >= PARALLELS_HEADER_SIZE
        and head[:16] in (PARALLELS_MAGIC_OLD, PARALLELS_MAGIC_EXT)
        and int.from_bytes(head[16:20], "little") == PARALLELS_VERSION
    )


def luks(src: ByteSource, head: bytes) -> bool:
    """LUKS magic with version 1 (QEMU's ``qcrypto_block_luks_has_format``)."""
    return head[:6] == LUKS_MAGIC and int.from_bytes(head[6:8], "big") == LUKS_VERSION


def raw(src: ByteSource, head: bytes) -> bool:
    """Always True: raw is what a file is when it is nothing else."""
    return True
