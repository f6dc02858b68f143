"""What the user asked for: output format, subformat, compression wrapper, checksums.

The format comes from ``-O`` or, when it is absent, from the output's suffixes
(``disk.qcow2``, ``disk.raw.gz``, ``disk.img.zst``); a name that says only the compression
(``disk.gz``) is ambiguous and refused with a hint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from imagewright.errors import InvalidArgumentError

#: Names users type for formats → qemu-img driver names.
FORMAT_NAMES: dict[str, str] = {
    "raw": "raw",
    "img": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vpc": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
}

#: The suffix each output format is recognised by.
SUFFIX_FORMATS: dict[str, str] = {
    ".raw": "raw",
    ".img": "raw",
    ".qcow2": "qcow2",
    ".vmdk": "vmdk",
    ".vhd": "vpc",
    ".vhdx": "vhdx",
    ".vdi": "vdi",
}

COMPRESSION_SUFFIXES: dict[str, str] = {".gz": "gzip", ".xz": "xz", ".zst": "zstd"}
COMPRESSIONS = ("gzip", "xz", "zstd")

#: Subformats each output format accepts, the first being the default.
SUBFORMATS: dict[str, tuple[str, ...]] = {
    "vmdk": ("monolithicSparse", "streamOptimized"),
    "vpc": ("dynamic", "fixed"),
    "vhdx": ("dynamic", "fixed"),
    "vdi": ("dynamic", "static"),
}

CLUSTER_COMPRESSIONS = ("zlib", "zstd")
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
DEFAULT_CHECKSUMS = ("sha256",)


@dataclass(frozen=True)
class OutputPlan:
    """How the output is to be written."""

    format: str
    subformat: str | None = None
    #: A compression wrapper around the whole output file (gzip, xz, zstd) or None.
    compression: str | None = None
    #: qcow2 cluster compression (zlib, zstd) or None.
    cluster_compression: str | None = None
    checksums: tuple[str, ...] = DEFAULT_CHECKSUMS
    options: dict[str, str | int | bool] = field(default_factory=dict)


def normalise_format(name: str) -> str:
    fmt = FORMAT_NAMES.get(name.lower())
    if fmt is None:
        raise InvalidArgumentError(
            f"'{name}' is not an output format; choose one of raw, qcow2, vmdk, vhd, vhdx, vdi."
        )
    return fmt


def parse_checksums(text: str | None) -> tuple[str, ...]:
    """``"md5,sha256"`` → ``("md5", "sha256")``; ``""``/``"none"`` → no checksums."""
    if text is None:
        return DEFAULT_CHECKSUMS
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if names in ((), ("none",)):
        return ()
    for name in names:
        if name not in CHECKSUM_ALGORITHMS:
            raise InvalidArgumentError(
                f"'{name}' is not a checksum imagewright computes; "
                f"choose from {', '.join(CHECKSUM_ALGORITHMS)}."
            )
        hashlib.new(name)  # fails early on a FIPS-restricted host rather than after the copy
    return names


def _suffix_plan(dst: Path) -> tuple[str | None, str | None]:
    """(format, compression) the output's name implies; either may be None."""
    suffixes = [s.lower() for s in dst.suffixes]
    compression = None
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        compression = COMPRESSION_SUFFIXES[suffixes.pop()]
    fmt = SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None
    return fmt, compression


def plan_output(
    dst: Path,
    *,
    output_format: str | None = None,
    subformat: str | None = None,
    compression: str | None = None,
    cluster_compression: str | None = None,
    checksums: tuple[str, ...] = DEFAULT_CHECKSUMS,
) -> OutputPlan:
    """Decide the output from the options and the output's name; one sentence when unclear."""
    name_format, name_compression = _suffix_plan(dst)
    if compression is not None and compression not in COMPRESSIONS:
        raise InvalidArgumentError(f"'{compression}' is not a compression; choose gzip, xz or zstd.")
    if compression and name_compression and compression != name_compression:
        raise InvalidArgumentError(
            f"The output name '{dst.name}' says {name_compression} but --compress says {compression}."
        )
    compression = compression or name_compression
    if output_format is not None:
        fmt = normalise_format(output_format)
    elif name_format is not None:
        fmt = name_format
    else:
        hint = (
            f"{dst.name}.raw" if not name_compression else dst.name.replace(dst.suffix, f".raw{dst.suffix}")
        )
        raise InvalidArgumentError(
            f"Cannot tell the output format from the name '{dst.name}'; add -O FORMAT "
            f"(raw, qcow2, vmdk, vhd, vhdx, vdi) or name it like '{hint}'."
        )
    choices = SUBFORMATS.get(fmt, ())
    if subformat is not None:
        matches = [c for c in choices if c.lower() == subformat.lower()]
        if not matches:
            allowed = ", ".join(choices) if choices else "none"
            raise InvalidArgumentError(f"'{subformat}' is not a subformat of {fmt}; choose from: {allowed}.")
        subformat = matches[0]
    elif choices:
        subformat = choices[0]
    if cluster_compression is not None:
        if fmt != "qcow2":
            raise InvalidArgumentError(
                "Cluster compression (--cluster-compression) exists only for qcow2 output."
            )
        if cluster_compression not in CLUSTER_COMPRESSIONS:
            raise InvalidArgumentError(
                f"'{cluster_compression}' is not a qcow2 cluster compression; choose zlib or zstd."
            )
    return OutputPlan(
        format=fmt,
        subformat=subformat,
        compression=compression,
        cluster_compression=cluster_compression,
        checksums=checksums,
        options=qemu_options(fmt, subformat, cluster_compression),
    )


def qemu_options(
    fmt: str, subformat: str | None, cluster_compression: str | None
) -> dict[str, str | int | bool]:
    """The ``-o`` options that make qemu-img write exactly the planned output."""
    if fmt == "qcow2":
        options: dict[str, str | int | bool] = {"compat": "1.1"}
        if cluster_compression == "zstd":
            options["compression_type"] = "zstd"
        return options
    if fmt == "vmdk":
        return {"subformat": subformat or "monolithicSparse"}
    if fmt == "vpc":
        # force_size keeps the exact virtual size instead of rounding it to a CHS geometry,
        # so a round trip through VHD gives back the same disk (and Azure accepts it).
        return {"subformat": subformat or "dynamic", "force_size": True}
    if fmt == "vhdx":
        return {"subformat": subformat or "dynamic"}
    if fmt == "vdi":
        return {"static": subformat == "static"}
    return {}
