"""The new virtual size: what the user asked for, and what the format will really hold.

Sizes are whole 512-byte sectors (qemu-img refuses anything else for most formats, and a
partition table counts in sectors); a disk with 4096-byte sectors needs whole 4 KiB.

VHD (qemu's ``vpc``) is the one format whose size is not free: Virtual PC and QEMU before
``force_size`` size a VHD by its CHS geometry (cylinders x heads x sectors, spec section 1.3),
and ``qemu-img create/convert -O vpc`` without ``force_size`` rounds a requested size *up* to
the next size a geometry can express (block/vpc.c ``calculate_geometry`` and the loop in
``vpc_co_create``). A VHD that qemu sizes that way keeps being sized that way after a
resize, so the new size is rounded up the same way and the report says so. A VHD sized by
its footer's current size (Hyper-V, Disk2vhd, ``qem2``: qemu-img with ``force_size``) takes
the exact size.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewright.errors import InvalidArgumentError
from imagewright.units import format_size

SECTOR = 512
#: The largest CHS geometry (65535 cylinders, 16 heads, 255 sectors): qemu then trusts the
#: footer's current size instead of the geometry.
VHD_MAX_GEOMETRY_SECTORS = 65535 * 16 * 255
#: qemu refuses VHDs beyond 2040 GiB (block/vpc.c VHD_MAX_SECTORS).
VHD_MAX_BYTES = 2040 * 1024**3


@dataclass(frozen=True)
class SizePlan:
    current: int
    #: What the user asked for, in bytes.
    requested: int
    #: What the image will hold (``requested`` unless the format rounds).
    final: int
    #: One sentence when ``final`` differs from ``requested``.
    note: str | None = None

    @property
    def grows(self) -> bool:
        return self.final > self.current

    @property
    def shrinks(self) -> bool:
        return self.final < self.current


def requested_size(current: int, change: tuple[str, int]) -> int:
    """``("+", n)`` grows by n, ``("-", n)`` shrinks by n, ``("=", n)`` is the new size."""
    op, amount = change
    if op == "+":
        return current + amount
    if op == "-":
        return current - amount
    if op == "=":
        return amount
    raise InvalidArgumentError(f"'{op}' is not a size change; use +SIZE, -SIZE or SIZE.")


def vhd_geometry(total_sectors: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for ``total_sectors``, as qemu's calculate_geometry."""
    total = min(total_sectors, VHD_MAX_GEOMETRY_SECTORS)
    if total >= 65535 * 16 * 63:
        sectors, heads = 255, 16
        cylinders_times_heads = total // sectors
    else:
        sectors = 17
        cylinders_times_heads = total // sectors
        heads = max(4, -(-cylinders_times_heads // 1024))
        if cylinders_times_heads >= heads * 1024 or heads > 16:
            sectors, heads = 31, 16
            cylinders_times_heads = total // sectors
        if cylinders_times_heads >= heads * 1024:
            sectors, heads = 63, 16
            cylinders_times_heads = total // sectors
    return cylinders_times_heads // heads, heads, sectors


def vhd_chs_size(size: int) -> tuple[int, tuple[int, int, int]]:
    """The virtual size qemu gives a CHS-sized VHD asked to hold ``size`` bytes, and its geometry."""
    wanted = min(VHD_MAX_GEOMETRY_SECTORS, size // SECTOR)
    cylinders = heads = sectors = 0
    step = 0
    # Like vpc_co_create: ask for one more sector until the geometry holds enough.
    while wanted > cylinders * heads * sectors:
        cylinders, heads, sectors = vhd_geometry(wanted + step)
        step += 1
    product = cylinders * heads * sectors
    if product == VHD_MAX_GEOMETRY_SECTORS:
        return (size // SECTOR) * SECTOR, (cylinders, heads, sectors)
    return product * SECTOR, (cylinders, heads, sectors)


def plan_size(
    current: int,
    change: tuple[str, int],
    *,
    fmt: str,
    vhd_size_source: str | None = None,
    sector_size: int = SECTOR,
    max_size: int | None = None,
) -> SizePlan:
    """Check the requested size and round it the way ``fmt`` will; one sentence when it cannot be."""
    requested = requested_size(current, change)
    if requested <= 0:
        raise InvalidArgumentError(
            f"The disk is {format_size(current)}; it cannot be resized to {requested} bytes."
        )
    if requested % sector_size:
        raise InvalidArgumentError(
            f"{requested} bytes is not a whole number of {sector_size}-byte sectors; "
            "give a size such as 8G or +1G."
        )
    if max_size is not None and requested > max_size:
        raise InvalidArgumentError(
            f"{format_size(requested)} is larger than the {format_size(max_size)} imagewright accepts "
            "for a disk (see --max-virtual-size)."
        )
    if fmt != "vpc":
        return SizePlan(current, requested, requested)
    if requested > VHD_MAX_BYTES:
        raise InvalidArgumentError(
            f"A VHD holds at most 2040 GiB; {format_size(requested)} needs another format (vhdx, qcow2)."
        )
    if vhd_size_source != "chs":
        return SizePlan(current, requested, requested)
    final, (cylinders, heads, sectors) = vhd_chs_size(requested)
    note = None
    if final != requested:
        note = (
            f"This VHD is sized by its CHS geometry, so {requested} bytes was rounded up to "
            f"{final} bytes ({cylinders}/{heads}/{sectors})."
        )
    if final % sector_size:
        raise InvalidArgumentError(
            f"The VHD geometry for {format_size(requested)} gives {final} bytes, not whole "
            f"{sector_size}-byte sectors; choose another size."
        )
    return SizePlan(current, requested, final, note)
