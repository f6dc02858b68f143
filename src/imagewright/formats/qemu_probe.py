"""Which driver QEMU 7.2's own format probe would pick for a file, and how sure it is.

Source: QEMU 7.2 ``block.c`` (``find_image_format``, ``bdrv_probe_all``) and each driver's
``bdrv_probe``. ``find_image_format`` reads ``BLOCK_PROBE_BUF_SIZE`` (2048) bytes at offset 0
— zeros past the end of a short file — and hands *all* 2048 to every driver; an empty file is
``raw`` without probing. The highest score wins (a tie goes to whichever driver registered
first, an order no caller controls). Scores::

    qcow2      100  'QFI\\xfb' and version >= 2          (qcow2_probe)
    qcow       100  'QFI\\xfb' and version == 1          (qcow_probe)
    qed        100  'QED\\0'                             (bdrv_qed_probe)
    vmdk       100  'KDMV' or 'COWD', or: '#' comment lines and blank lines (spaces only), then
                    'version=1|2|3' and '\\n' or '\\r\\n'      (vmdk_probe)
    vdi        100  u32 LE signature 0xbeda107f at 0x40  (vdi_probe)
    vhdx       100  'vhdxfile'                           (vhdx_probe)
    vpc        100  'conectix' at offset 0 only          (vpc_probe: a fixed VHD is raw to it)
    parallels  100  'WithoutFreeSpace'/'WithouFreSpacExt' and u32 LE version 2 (parallels_probe)
    luks       100  'LUKS\\xba\\xbe' and u16 BE version 1 (block_crypto_probe_luks)
    bochs      100  'Bochs Virtual HD Image', 'Redolog', 'Growing', version 1.0 or 2.0 (bochs_probe)
    cloop        2  the cloop V2.0 shell-script preamble (cloop_probe)
    dmg          2  a file *name* ending in '.dmg' (dmg_probe: not content; when the name is known)
    raw          1  anything                              (raw_probe)

NOTE (safety): imagewright always names the format when it hands a file to QEMU (``-f``,
``format=``), so QEMU never probes our inputs. But an image we accept is passed on: a cloud
or a user that lets QEMU probe it must see the same format we judged. So a file whose
content QEMU would probe as another format than ours, or that matches two formats at once,
is refused — with one deliberate exception: a fixed VHD (footer at the end only) that QEMU
probes as raw reads the same guest bytes either way, plus a 512-byte footer.
"""

from __future__ import annotations

#: ``BLOCK_PROBE_BUF_SIZE`` in ``block.c``.
PROBE_BUFFER_SIZE = 2048

_CLOOP_V2 = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"


def _vmdk_text_score(buf: bytes) -> int:
    """``vmdk_probe`` on a buffer that has no sparse magic."""
    position, end = 0, len(buf)
    while position < end:
        char = buf[position]
        if char == 0x23:  # '#': skip the comment line
            newline = buf.find(b"\n", position)
            position = end if newline < 0 else newline
            position += 1
            continue
        if char == 0x20:  # ' ': only blank lines before 'version='
            while position < end and buf[position] == 0x20:
                position += 1
            if position < end and buf[position] == 0x0D:
                position += 1
            if position == end or buf[position] != 0x0A:
                return 0
            position += 1
            continue
        for version in (b"1", b"2", b"3"):
            for ending in (b"\n", b"\r\n"):
                if buf.startswith(b"version=" + version + ending, position):
                    return 100
        return 0
    return 0


def _u32le(buf: bytes, offset: int) -> int:
    return int.from_bytes(buf[offset : offset + 4], "little")


def _u32be(buf: bytes, offset: int) -> int:
    return int.from_bytes(buf[offset : offset + 4], "big")


def qemu_probe_scores(head: bytes, file_size: int, filename: str = "") -> dict[str, int]:
    """Every QEMU driver whose probe scores the file above zero, with its score.

    ``filename``: the name QEMU would be given, when known (``dmg_probe`` judges by it).
    """
    if file_size == 0:
        return {"raw": 1}
    buf = head[:PROBE_BUFFER_SIZE].ljust(PROBE_BUFFER_SIZE, b"\0")
    scores: dict[str, int] = {"raw": 1}
    magic = buf[:4]
    if magic == b"QFI\xfb":
        version = _u32be(buf, 4)
        if version >= 2:
            scores["qcow2"] = 100
        elif version == 1:
            scores["qcow"] = 100
    if magic == b"QED\0":
        scores["qed"] = 100
    if magic in (b"KDMV", b"COWD") or _vmdk_text_score(buf):
        scores["vmdk"] = 100
    if _u32le(buf, 0x40) == 0xBEDA107F:
        scores["vdi"] = 100
    if buf[:8] == b"vhdxfile":
        scores["vhdx"] = 100
    if buf[:8] == b"conectix":
        scores["vpc"] = 100
    if buf[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt") and _u32le(buf, 16) == 2:
        scores["parallels"] = 100
    if buf[:6] == b"LUKS\xba\xbe" and int.from_bytes(buf[6:8], "big") == 1:
        scores["luks"] = 100
    if (
        buf[:32].split(b"\0", 1)[0] == b"Bochs Virtual HD Image"
        and buf[32:48].split(b"\0", 1)[0] == b"Redolog"
        and buf[48:64].split(b"\0", 1)[0] == b"Growing"
        and _u32le(buf, 64) in (0x00010000, 0x00020000)
    ):
        scores["bochs"] = 100
    if buf.startswith(_CLOOP_V2):
        scores["cloop"] = 2
    if len(filename) > 4 and filename.endswith(".dmg"):
        scores["dmg"] = 2
    return scores


def qemu_probe_choice(scores: dict[str, int]) -> list[str]:
    """The drivers tied for the highest score (one, unless QEMU's choice depends on order)."""
    best = max(scores.values())
    return sorted(name for name, score in scores.items() if score == best)
