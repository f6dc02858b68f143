"""ISO 9660 (with Joliet, Rock Ridge, El Torito), following libblkid ``superblocks/iso9660.c``.

Volume descriptors start at 32 KiB, one per 2 KiB sector (spec sections 1.9 and 5.4): type
0 boot record, 1 primary (PVD), 2 supplementary (Joliet when its escape sequence is
``%/@``, ``%/C`` or ``%/E``), 255 terminator; blkid looks at 16 of them at most, and so
do we. The label is the PVD volume id, or the Joliet one (UTF-16BE, 16 characters)
merged with the PVD's when one is a prefix of the other, exactly as blkid merges them. The
UUID is the modification date (else the creation date) as ``YYYY-MM-DD-HH-MM-SS-CC``.
Rock Ridge is detected from the SUSP entries of the root directory's first record.
"""

from __future__ import annotations

from imagewright.binary import ByteSource
from imagewright.disk.filesystems.info import FilesystemInfo
from imagewright.disk.filesystems.reading import (
    blkid_id_label,
    blkid_label,
    read_or_none,
    u16le,
    u32le,
    utf16_label,
)

SECTOR = 2048
DESCRIPTORS_OFFSET = 16 * SECTOR
_MAX_DESCRIPTORS = 16
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")
_C_SPACE = b" \t\n\v\f\r"


def probe(src: ByteSource) -> FilesystemInfo | None:
    first = read_or_none(src, DESCRIPTORS_OFFSET, SECTOR)
    if first is None:
        return None
    if first[1:6] == b"CD001":
        return _probe_iso(src)
    if first[9:14] == b"CDROM":
        info = FilesystemInfo(type="iso9660", version="High Sierra", block_size=SECTOR)
        info.label = blkid_label(first[24:56])
        return info
    return None


def _probe_iso(src: ByteSource) -> FilesystemInfo | None:
    boot: bytes | None = None
    pvd: bytes | None = None
    joliet: bytes | None = None
    for index in range(_MAX_DESCRIPTORS):
        if boot is not None and pvd is not None and joliet is not None:
            break
        desc = read_or_none(src, DESCRIPTORS_OFFSET + index * SECTOR, SECTOR, "ISO 9660 volume descriptor")
        if desc is None or desc[0] == 0xFF:
            break
        if boot is None and desc[0] == 0:
            boot = desc
        elif pvd is None and desc[0] == 1:
            pvd = desc
        elif joliet is None and desc[0] == 2:
            joliet = desc if desc[88:91] in _JOLIET_ESCAPES else None
    if pvd is None:
        return None

    info = FilesystemInfo(type="iso9660", block_size=SECTOR)
    details = info.details
    for name, offset, length in (
        ("system_id", 8, 32),
        ("volume_set_id", 190, 128),
        ("publisher_id", 318, 128),
        ("data_preparer_id", 446, 128),
        ("application_id", 574, 128),
    ):
        value = _id_field(pvd, joliet, offset, length, always_joliet=name in ("system_id", "volume_set_id"))
        if value is not None:
            details[name] = value
    info.uuid = _date_uuid(pvd[830:847]) or _date_uuid(pvd[813:830])
    if boot is not None:
        boot_system = blkid_id_label(boot[7:39])
        if boot_system is not None:
            details["boot_system_id"] = boot_system
        details["el_torito"] = boot[7:30] == b"EL TORITO SPECIFICATION"
    details["joliet"] = joliet is not None
    if joliet is not None:
        info.version = "Joliet Extension"
        merged = _merge_utf16be_ascii(joliet[40:72], pvd[40:72])
        info.label = utf16_label(merged if merged else joliet[40:72], "be")
    else:
        info.label = blkid_label(pvd[40:72])
    details["pvd_label"] = blkid_label(pvd[40:72])
    logical_block = u16le(pvd, 128)
    info.size_bytes = u32le(pvd, 80) * logical_block
    details["rock_ridge"] = _has_rock_ridge(src, pvd)
    return info


def _id_field(pvd: bytes, joliet: bytes | None, offset: int, length: int, always_joliet: bool) -> str | None:
    """An identifier field the way blkid picks between its PVD and Joliet copies."""
    ascii_raw = pvd[offset : offset + length]
    if always_joliet:
        if joliet is None:
            return blkid_id_label(ascii_raw)
        utf16 = joliet[offset : offset + length]
        merged = _merge_utf16be_ascii(utf16, ascii_raw)
        return _utf16_id(merged if merged else utf16)
    ascii_empty = _ascii_empty(ascii_raw) or ascii_raw[:1] == b"_"
    unicode_empty = joliet is None or _utf16_empty(joliet[offset : offset + length])
    if joliet is not None and joliet[offset : offset + 2] == b"\0_":
        unicode_empty = True
    if not unicode_empty and not ascii_empty and joliet is not None:
        utf16 = joliet[offset : offset + length]
        merged = _merge_utf16be_ascii(utf16, ascii_raw)
        return _utf16_id(merged if merged else utf16)
    if not unicode_empty and joliet is not None:
        return _utf16_id(joliet[offset : offset + length])
    if not ascii_empty:
        return blkid_id_label(ascii_raw)
    return None


def _utf16_id(raw: bytes) -> str | None:
    text = utf16_label(raw, "be")
    if text is None:
        return None
    return text.lstrip(" \t\n\v\f\r") or None


def _ascii_empty(raw: bytes) -> bool:
    return not raw or raw[0] == 0 or all(byte in _C_SPACE for byte in raw)


def _utf16_empty(raw: bytes) -> bool:
    return all(raw[i] == 0 and raw[i + 1] in _C_SPACE for i in range(0, len(raw) - 1, 2))


def _merge_utf16be_ascii(utf16: bytes, ascii_raw: bytes) -> bytes:
    """blkid's merge: Joliet's text where it agrees with the PVD's, then the PVD's longer tail.

    Returns b"" when the two disagree (then blkid uses the Joliet text alone).
    """
    length = len(ascii_raw)
    out = bytearray()
    a = u = 0
    while u + 1 < length and a < length:
        if 0xD8 <= utf16[u] <= 0xDB and u + 3 < length and 0xDC <= utf16[u + 2] <= 0xDF:
            out += utf16[u : u + 2]
            u += 2
        if ascii_raw[a] == ord("_"):
            out += utf16[u : u + 2]
        elif utf16[u] == 0 and utf16[u + 1] == ord("_"):
            out += bytes((0, ascii_raw[a]))
        elif utf16[u] == 0 and _c_upper(ascii_raw[a]) == _c_upper(utf16[u + 1]):
            out += bytes((0, utf16[u + 1] if 0x41 <= ascii_raw[a] <= 0x5A else ascii_raw[a]))
        else:
            return b""
        a += 1
        u += 2
    while a < length:
        out += bytes((0, ascii_raw[a]))
        a += 1
    return bytes(out)


def _c_upper(byte: int) -> int:
    return byte - 32 if 0x61 <= byte <= 0x7A else byte


def _date_uuid(date: bytes) -> str | None:
    """blkid's ISO "UUID": the 16 date digits as YYYY-MM-DD-HH-MM-SS-CC; None when the date is unset."""
    digits = date[:16]
    if len(date) < 17 or (digits == b"0" * 16 and date[16] == 0):
        return None
    groups = (
        digits[0:4],
        digits[4:6],
        digits[6:8],
        digits[8:10],
        digits[10:12],
        digits[12:14],
        digits[14:16],
    )
    # blkid formats the bytes with %c into a C string: a NUL among them ends it.
    text = b"-".join(groups).split(b"\0", 1)[0].decode("latin-1")
    return text or None


def _has_rock_ridge(src: ByteSource, pvd: bytes) -> bool:
    """SUSP ``SP`` at the start of the root's "." record, then an RRIP ``ER`` or RR entries."""
    root = pvd[156:190]
    extent = u32le(root, 2)
    block = u16le(pvd, 128) or SECTOR
    first = read_or_none(src, extent * block, SECTOR, "ISO 9660 root directory")
    if first is None:
        return False
    record_len = first[0]
    name_len = first[32]
    if record_len < 34 or record_len > len(first):
        return False
    system_use_start = 33 + name_len + (1 - name_len % 2)
    system_use = first[system_use_start:record_len]
    if system_use[:2] != b"SP" or system_use[4:6] != b"\xbe\xef":
        return False
    areas = [system_use]
    # One continuation area (CE) may hold the ER entry; follow it once, bounded to a sector.
    for signature, entry in _susp_entries(system_use):
        if signature == b"CE" and len(entry) >= 28:
            ce_block, ce_offset, ce_length = u32le(entry, 4), u32le(entry, 12), u32le(entry, 20)
            length = min(ce_length, SECTOR)
            continuation = read_or_none(
                src, ce_block * block + ce_offset, length, "ISO 9660 continuation area"
            )
            if continuation is not None:
                areas.append(continuation)
            break
    for area in areas:
        for signature, entry in _susp_entries(area):
            if signature in (b"RR", b"PX", b"NM", b"TF", b"SL"):
                return True
            if signature == b"ER" and len(entry) >= 8:
                id_len = entry[4]
                ident = entry[8 : 8 + id_len]
                if ident.startswith((b"RRIP", b"IEEE_P1282", b"IEEE_1282")):
                    return True
    # The "." record often carries only SP/CE; the next record ("..") has PX when RR is used.
    second_start = record_len
    if second_start < len(first):
        second_len = first[second_start]
        if second_len >= 34 and second_start + second_len <= len(first):
            record = first[second_start : second_start + second_len]
            name_len = record[32]
            use = record[33 + name_len + (1 - name_len % 2) :]
            return any(sig in (b"RR", b"PX", b"NM", b"TF") for sig, _ in _susp_entries(use))
    return False


def _susp_entries(area: bytes) -> list[tuple[bytes, bytes]]:
    entries = []
    position = 0
    while position + 4 <= len(area):
        length = area[position + 2]
        if length < 4 or position + length > len(area):
            break
        entries.append((area[position : position + 2], area[position : position + length]))
        position += length
    return entries
