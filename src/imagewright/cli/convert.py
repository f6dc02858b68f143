"""``imagewright convert SRC DST``: any format to any format, checked, hashed, atomic."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from imagewright.cli.common import SIZE, json_option, sigterm_as_interrupt, staged_progress
from imagewright.cli.render import emit_json, stdout_console
from imagewright.formats.base import Limits
from imagewright.ops.convert import convert
from imagewright.ops.convert.plan import CHECKSUM_ALGORITHMS, parse_checksums
from imagewright.units import format_size


@click.command("convert")
@click.argument("src", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("dst", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-O",
    "--output-format",
    metavar="FORMAT",
    help="raw, qcow2, vmdk, vhd, vhdx or vdi (default: from DST's suffix).",
)
@click.option(
    "--subformat",
    metavar="NAME",
    help="vmdk: monolithicSparse|streamOptimized; vhd/vhdx: dynamic|fixed; vdi: dynamic|static.",
)
@click.option(
    "--compress",
    "compression",
    type=click.Choice(["gzip", "xz", "zstd"]),
    help="Wrap the output in a compressed file (default: from DST's .gz/.xz/.zst suffix).",
)
@click.option(
    "--cluster-compression",
    type=click.Choice(["zlib", "zstd"]),
    help="Compress qcow2 clusters (a smaller qcow2 that qemu reads directly).",
)
@click.option(
    "--checksum",
    "checksum_text",
    metavar="ALGS",
    default="sha256",
    show_default=True,
    help=f"Comma-separated digests of the output ({', '.join(CHECKSUM_ALGORITHMS)}, or none).",
)
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option(
    "--max-virtual-size", type=SIZE, default=None, help="Refuse sources larger than this (default 16T)."
)
@json_option
def command(
    src: Path,
    dst: Path,
    output_format: str | None,
    subformat: str | None,
    compression: str | None,
    cluster_compression: str | None,
    checksum_text: str,
    force: bool,
    max_virtual_size: int | None,
    as_json: bool,
) -> None:
    """Convert SRC to DST in another format, computing checksums as it writes.

    SRC may be raw, qcow2, vmdk, vhd, vhdx, vdi (also .gz, .xz, .zst, .bz2 compressed), or
    an OVA (its manifest, signature and disk checked while the disk is extracted); it is
    inspected first and refused if unsafe. DST is written under a temporary name and
    appears only when complete.

    \b
    Examples:
      imagewright convert disk.vmdk disk.qcow2
      imagewright convert disk.qcow2 disk.raw.gz --checksum md5,sha256
      imagewright convert cloud.raw.xz cloud.vhd --subformat fixed
    """
    limits = Limits() if max_virtual_size is None else Limits(max_virtual_size=max_virtual_size)
    # An OVA: its disk is extracted while the package is verified (one read), then converted.
    from imagewright.package.ova_convert import convert_ova, is_ova

    with sigterm_as_interrupt(), staged_progress(enabled=not as_json) as progress:
        result = (convert_ova if is_ova(src) else convert)(
            src,
            dst,
            output_format=output_format,
            subformat=subformat,
            compression=compression,
            cluster_compression=cluster_compression,
            checksums=parse_checksums(checksum_text),
            force=force,
            limits=limits,
            progress=progress,
        )
    if as_json:
        emit_json(result.to_dict())
        return
    out = stdout_console()
    kind = result.format + (f" ({result.subformat})" if result.subformat else "")
    if result.cluster_compression:
        kind += f", {result.cluster_compression} clusters"
    if result.compression:
        kind += f" in {result.compression}"
    source = result.source_format + (f" in {result.source_compression}" if result.source_compression else "")
    out.print(Text(f"converted {result.source} ({source}) -> {result.output} ({kind})"))
    out.print(
        Text(
            f"virtual size {format_size(result.virtual_size)}, file {format_size(result.output_size)}, "
            f"on disk {format_size(result.allocated_size)}, {result.seconds:.1f} s"
        )
    )
    for name, digest in result.checksums.items():
        out.print(Text(f"{name}  {digest}  {result.output}"))
    for name, digest in (result.content_checksums or {}).items():
        out.print(Text(f"{name}  {digest}  (uncompressed image)"))
    for note in result.notes:
        out.print(Text(f"note: {note}"))
