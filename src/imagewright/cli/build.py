"""``imagewright build --from SOURCE -o OUT``: a bootable disk from a filesystem image, tree or tarball."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from imagewright.cli.common import (
    SIZE,
    emit_json,
    json_option,
    sigterm_as_interrupt,
    staged_progress,
    stdout_console,
)
from imagewright.units import format_size

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("build")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(path_type=Path),
    metavar="SOURCE",
    help="A flat filesystem image, a root filesystem directory, or a rootfs tarball.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The disk to write.",
)
@click.option(
    "--size",
    type=SIZE,
    default=None,
    help="Size of the disk, e.g. 4G (default: the content plus a quarter, in whole GiB).",
)
@click.option("--swap", type=SIZE, default=0, help="Add a swap partition of this size, e.g. 512M.")
@click.option(
    "--table",
    type=click.Choice(["mbr", "gpt"]),
    default=None,
    help="Partition table (default: gpt; mbr with --firmware bios). An MBR disk boots under BIOS only.",
)
@click.option(
    "--firmware",
    type=click.Choice(["hybrid", "bios", "uefi"]),
    default=None,
    help="What the disk boots under (default hybrid: both BIOS and UEFI, with Secure Boot).",
)
@click.option(
    "--esp-size",
    type=SIZE,
    default=None,
    help="Size of the EFI System Partition (default 100M).",
)
@click.option(
    "--efi-loader",
    type=click.Choice(["auto", "signed", "unsigned"]),
    default="auto",
    show_default=True,
    help="UEFI boot loader: Debian's signed shim + GRUB (Secure Boot), an unsigned GRUB, "
    "or the signed one when it can be had.",
)
@click.option(
    "--fs",
    "fs_type",
    type=click.Choice(["ext4", "ext3", "ext2"]),
    default=None,
    help="Root filesystem for a directory or tarball source (default ext4).",
)
@click.option("--kernel", type=_FILE, default=None, help="Copy this kernel into /boot and boot it.")
@click.option("--initrd", type=_FILE, default=None, help="The initrd that goes with --kernel.")
@click.option("--append", default="", metavar="ARGS", help="More kernel parameters.")
@click.option(
    "-O",
    "--output-format",
    metavar="FORMAT",
    default=None,
    help="raw, qcow2, vmdk, vhd (vpc), vhdx or vdi (default: from OUT's suffix, else raw).",
)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@json_option
def command(
    source: Path,
    output: Path,
    size: int | None,
    swap: int,
    table: str | None,
    firmware: str | None,
    esp_size: int | None,
    efi_loader: str,
    fs_type: str | None,
    kernel: Path | None,
    initrd: Path | None,
    append: str,
    output_format: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Build a bootable, partitioned disk from SOURCE, without root.

    SOURCE is a flat filesystem image (an EC2-style ext2/3/4 image without a partition table,
    raw, qcow2, vmdk ... or compressed; copied as it is and grown to fill its partition), a
    directory holding a root filesystem, or a rootfs tarball (.tar, .tar.gz, .tar.xz, .tar.zst,
    .tar.bz2, e.g. from debootstrap or docker export). Every source is inspected first and
    refused if unsafe; a tarball member that would land outside the image stops the build
    before anything is written.

    By default the disk boots under both BIOS and UEFI (--firmware hybrid): a GPT disk with a
    BIOS boot partition for GRUB 2 (i386-pc), an EFI System Partition holding Debian's signed
    shim and GRUB (Secure Boot works; without them, an unsigned GRUB, said in the report) and
    the root partition after them; an optional swap partition at the end. --firmware bios
    gives an MBR disk (root partition 1, bootable) or, with --table gpt, a BIOS boot partition
    and the root; --firmware uefi an ESP and the root. Both firmwares read the same grub.cfg,
    booting the newest /boot/vmlinuz-* (or --kernel) with root=UUID= and a serial console, and
    /etc/fstab names root and swap by UUID.

    Owners, modes, device nodes, links and extended attributes of a tarball come out as the
    tarball says, also when build runs as an ordinary user. A directory is read as it is on
    disk: run by an ordinary user, the files that user owns become owned by root (0:0) in the
    image (like tar --owner 0 --group 0); files of other owners keep them.

    OUT is written under a temporary name and appears only when complete.

    \b
    Examples:
      imagewright build --from ec2-root.img -o disk.qcow2 --size 8G --swap 512M
      imagewright build --from rootfs.tar.xz -o disk.raw --firmware uefi --esp-size 200M
      imagewright build --from root.img --kernel vmlinuz --initrd initrd.img -o disk.qcow2
    """
    from imagewright.ops.build import build

    with sigterm_as_interrupt(), staged_progress(enabled=not as_json) as progress:
        report = build(
            source,
            output,
            size=size,
            swap=swap,
            table=table,  # type: ignore[arg-type]
            firmware=firmware,  # type: ignore[arg-type]
            esp_size=esp_size,
            efi_loader=efi_loader,  # type: ignore[arg-type]
            fs_type=fs_type,
            kernel=kernel,
            initrd=initrd,
            append=append,
            output_format=output_format,
            force=force,
            progress=progress,
        )
    if as_json:
        emit_json(report.to_dict())
        return
    out = stdout_console()
    fmt = report.output_format + (f" in {report.output_compression}" if report.output_compression else "")
    src = report.source_kind + (f", {report.source_format}" if report.source_format else "")
    out.print(
        Text(f"built {report.output} ({fmt}, {format_size(report.disk_size)}) from {report.source} ({src})")
    )
    grid = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("#", "role", "start", "size", "type", "filesystem", "uuid"):
        grid.add_column(column)
    for part in report.partitions:
        grid.add_row(
            str(part.number),
            part.role + (" *" if part.bootable else ""),
            str(part.start),
            format_size(part.size),
            part.type,
            part.filesystem or "",
            part.filesystem_uuid or "",
        )
    out.print(Text(f"{report.table.upper()} partition table, disk id {report.disk_id}"))
    out.print(grid)
    out.print(Text(f"boots under: {' and '.join(name.upper() for name in report.boots_under)}"))
    boot = report.bootloader
    if boot is not None:
        out.print(
            Text(
                f"{boot.loader}: core image at sector {boot.core_image_lba} ({boot.location}), "
                f"prefix {boot.prefix}"
            )
        )
    esp = report.esp
    if esp is not None:
        chain = "shim -> GRUB (signed: Secure Boot)" if esp.secure_boot else "GRUB (unsigned: no Secure Boot)"
        out.print(
            Text(f"UEFI: {chain} at EFI/BOOT/BOOTX64.EFI on partition {esp.partition} ({esp.fat_type})")
        )
    for key, value in report.image_properties.items():
        out.print(Text(f"image property: {key}={value}"))
    kernel_line = report.kernel.kernel + (f" + {report.kernel.initrd}" if report.kernel.initrd else "")
    out.print(Text(f"boots {kernel_line} ({report.kernel.origin})"))
    out.print(Text(f"kernel command line: {' '.join(report.kernel_command_line)}"))
    for note in report.notes:
        out.print(Text(f"note: {note}"))
    out.print(Text(f"done in {report.seconds:.1f} s"))
