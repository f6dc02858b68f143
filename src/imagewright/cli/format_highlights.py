"""The few header facts per format a person wants to see (``--json`` has all of them).

Each entry is a label and a dotted path into the format's details dataclass; a value that
is missing, None or empty is skipped.
"""

from __future__ import annotations

from typing import Any

from imagewright.units import format_size

HIGHLIGHTS: dict[str, tuple[tuple[str, str], ...]] = {
    "qcow2": (
        ("compat", "version"),
        ("cluster size", "cluster_size"),
        ("compression", "compression"),
        ("encryption", "encryption"),
        ("refcount bits", "refcount_bits"),
        ("lazy refcounts", "lazy_refcounts"),
        ("extended l2", "extended_l2"),
        ("snapshots", "nb_snapshots"),
        ("data file", "data_file"),
        ("dirty", "dirty"),
        ("corrupt", "corrupt"),
    ),
    "qcow": (("cluster size", "cluster_size"), ("encryption", "encryption")),
    "vmdk": (
        ("create type", "create_type"),
        ("version", "sparse_header.version"),
        ("grain size", "sparse_header.grain_sectors"),
        ("compressed", "sparse_header.compress_algorithm"),
        ("CID", "descriptor.cid"),
        ("parent CID", "descriptor.parent_cid"),
        ("adapter type", "descriptor.adapter_type"),
    ),
    "vpc": (
        ("disk type", "disk_type"),
        ("creator", "creator_application"),
        ("geometry", "chs_text"),
        ("size from", "size_source"),
        ("block size", "dynamic.block_size"),
    ),
    "vhdx": (
        ("block size", "block_size"),
        ("logical sector", "logical_sector_size"),
        ("physical sector", "physical_sector_size"),
        ("fixed", "leave_blocks_allocated"),
        ("has parent", "has_parent"),
        ("creator", "creator"),
    ),
    "vdi": (
        ("image type", "image_type"),
        ("block size", "block_size"),
        ("blocks", "blocks_in_image"),
        ("allocated", "blocks_allocated"),
        ("uuid", "uuid_image"),
    ),
    "qed": (("cluster size", "cluster_size"),),
    "parallels": (("cluster size", "cluster_size"),),
    "luks": (("version", "version"), ("cipher", "cipher_name"), ("mode", "cipher_mode"), ("uuid", "uuid")),
}

_SIZE_FIELDS = {"cluster_size", "block_size", "dynamic.block_size"}


def _lookup(details: Any, path: str) -> Any:
    value = details
    for part in path.split("."):
        if value is None:
            return None
        if part == "chs_text":
            cyl, heads, spt = (getattr(value, n, None) for n in ("cylinders", "heads", "sectors_per_track"))
            return f"{cyl}/{heads}/{spt} (C/H/S)" if cyl is not None else None
        value = getattr(value, part, None)
    return value


def highlights(fmt: str, details: Any) -> list[tuple[str, str]]:
    """Label/value pairs worth showing for an image of format ``fmt``."""
    items: list[tuple[str, str]] = []
    for label, path in HIGHLIGHTS.get(fmt, ()):
        value = _lookup(details, path)
        if value is None or value in ("", [], {}):
            continue
        if path in _SIZE_FIELDS and isinstance(value, int):
            text = format_size(value)
        elif path == "version" and fmt == "qcow2":
            text = {2: "0.10 (version 2)", 3: "1.1 (version 3)"}.get(value, str(value))
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = str(value)
        items.append((label, text))
    return items
