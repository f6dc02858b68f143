"""Parallels disk images (QEMU's "parallels" driver): header, BAT and guest view.

Source: QEMU 7.2 ``block/parallels.c`` (``parallels_probe``, ``parallels_open``,
``bat2sect``, ``parallels_co_readv``) and ``block/parallels.h``; the format description in
QEMU's ``docs/interop/parallels.txt``. All integers are little-endian. Header (64 bytes)::

     0 magic 'WithoutFreeSpace' (old) or 'WithouFreSpacExt' (current)   16 version (2)
    20 heads   24 cylinders   28 tracks (sectors per cluster)   32 BAT entries
    36 nb_sectors u64 (only the low 32 bits count for the old magic)   44 in-use magic
    48 data offset (sectors)  52 flags   56 format extension offset u64

The BAT follows at offset 64: one u32 per cluster, 0 = unallocated (zeros); otherwise the
cluster's file offset in sectors, multiplied by ``tracks`` for the current magic (1 for the
old one).

NOTE (safety): the header names no other file. The BAT is bounded by QEMU's limits and by
``Limits.max_table_bytes``, and every allocated cluster must lie inside the file.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from imagewright.binary import ByteSource, Layout, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import Limits, OpenedImage
from imagewright.formats.mapped_guest import GuestRun, MappedGuestSource
from imagewright.units import format_size

MAGIC_OLD = probes.PARALLELS_MAGIC_OLD
MAGIC_EXT = probes.PARALLELS_MAGIC_EXT
VERSION = probes.PARALLELS_VERSION
HEADER_SIZE = probes.PARALLELS_HEADER_SIZE
SECTOR = 512
INUSE_MAGIC = 0x746F6E59
INT_MAX = 2**31 - 1

HEADER = Layout(
    "Parallels header",
    "<",
    [
        ("magic", "16s"),
        ("version", "I"),
        ("heads", "I"),
        ("cylinders", "I"),
        ("tracks", "I"),
        ("bat_entries", "I"),
        ("nb_sectors", "Q"),
        ("inuse", "I"),
        ("data_off", "I"),
        ("flags", "I"),
        ("ext_off", "Q"),
    ],
)


@dataclass(frozen=True)
class ParallelsDetails:
    magic: str
    version: int
    heads: int
    cylinders: int
    tracks: int
    cluster_size: int
    bat_entries: int
    nb_sectors: int
    in_use: bool
    data_off: int
    flags: int
    ext_off: int
    allocated_clusters: int | None


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.parallels


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Validate the header like QEMU's ``parallels_open`` and the BAT against the file."""
    fields = HEADER.unpack(read_exact(src, 0, HEADER_SIZE, "Parallels header"))
    magic = fields["magic"]
    if magic not in (MAGIC_OLD, MAGIC_EXT) or fields["version"] != VERSION:
        raise ImageFormatError("The file is not a Parallels image (no known magic with version 2).")
    tracks = fields["tracks"]
    if tracks == 0 or tracks > INT_MAX // 513:
        raise ImageFormatError(f"The Parallels cluster size of {tracks} sectors is invalid.")
    nb_sectors = fields["nb_sectors"]
    if magic == MAGIC_OLD:
        nb_sectors &= 0xFFFFFFFF
        multiplier = 1
    else:
        multiplier = tracks
    virtual_size = nb_sectors * SECTOR
    entries = fields["bat_entries"]
    if entries > INT_MAX // 4:
        raise ImageFormatError(f"The Parallels BAT claims {entries} entries, more than QEMU accepts.")
    bat_bytes = entries * 4
    if HEADER_SIZE + bat_bytes > src.size:
        raise ImageFormatError(
            f"The Parallels BAT (bytes 64..{HEADER_SIZE + bat_bytes}) lies beyond the end of the "
            f"{src.size}-byte file."
        )
    cluster_size = tracks * SECTOR
    problems: list[str] = []
    guest: ByteSource | None = None
    allocated: int | None = None
    if bat_bytes > limits.max_table_bytes:
        problems.append(
            f"the Parallels BAT has {entries} entries ({format_size(bat_bytes)}), more than the "
            f"{format_size(limits.max_table_bytes)} allowed for a metadata table"
        )
    else:
        bat = array("I", read_exact(src, HEADER_SIZE, bat_bytes, "Parallels BAT"))
        if bat.itemsize != 4:
            raise AssertionError("array('I') must hold 32-bit entries")
        allocated = entries - bat.count(0)
        header_end = HEADER_SIZE + bat_bytes
        quick_ok = not allocated or (
            max(bat) * multiplier * SECTOR + cluster_size <= src.size
            and min(filter(None, bat)) * multiplier * SECTOR >= header_end
        )
        for index, entry in enumerate([] if quick_ok else bat):
            if not entry:
                continue
            start = entry * multiplier * SECTOR
            if start + cluster_size > src.size or start < header_end:
                problems.append(
                    f"Parallels BAT entry {index} points to offset {start}, outside the data area of the "
                    f"{src.size}-byte file"
                )
                break
        guest = ParallelsGuest(src, virtual_size, bat, cluster_size, multiplier)

    details = ParallelsDetails(
        magic=magic.decode("ascii"),
        version=fields["version"],
        heads=fields["heads"],
        cylinders=fields["cylinders"],
        tracks=tracks,
        cluster_size=cluster_size,
        bat_entries=entries,
        nb_sectors=nb_sectors,
        in_use=fields["inuse"] == INUSE_MAGIC,
        data_off=fields["data_off"],
        flags=fields["flags"],
        ext_off=fields["ext_off"],
        allocated_clusters=allocated,
    )
    return OpenedImage(
        format="parallels",
        virtual_size=virtual_size,
        details=details,
        encryption=None,
        guest=guest,
        problems=problems,
    )


class ParallelsGuest(MappedGuestSource):
    """Guest bytes through the BAT; clusters past the BAT or unallocated read as zeros."""

    def __init__(
        self, image: ByteSource, virtual_size: int, bat: array[int], cluster_size: int, multiplier: int
    ) -> None:
        super().__init__(image, virtual_size, "Parallels")
        self._bat = bat
        self._cluster_size = cluster_size
        self._multiplier = multiplier

    def map_run(self, offset: int, max_length: int) -> GuestRun:
        cluster, within = divmod(offset, self._cluster_size)
        length = min(max_length, self._cluster_size - within)
        entry = self._bat[cluster] if cluster < len(self._bat) else 0
        if not entry:
            return GuestRun(length)
        return GuestRun(length, host_offset=entry * self._multiplier * SECTOR + within)
