"""``imagewright build --from SOURCE -o OUT``: a bootable disk from a filesystem image, tree or tarball."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from imagewright.cli.common import SIZE, json_option, sigterm_as_interrupt, staged_progress
from imagewright.cli.render import emit_json, stdout_console
from imagewright.units import format_size

if TYPE_CHECKING:
    from imagewright.ops.build import BuildReport

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("build")
@click.option(
    "--from",
    "source",
    default=None,
    metavar="SOURCE",
    help="A release (debian:bookworm), a flat filesystem image, a root filesystem directory, "
    "or a rootfs tarball.",
)
@click.option(
    "--recipe",
    type=_FILE,
    default=None,
    help="A TOML recipe naming the release, packages, files, commands, size and outputs.",
)
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The disk to write (a release built to NAME.tar[.gz|.xz|.zst] gives the rootfs tarball).",
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
    help="UEFI boot loader: signed shim + GRUB (Secure Boot; the guest's own when it has them, "
    "else Debian's), an unsigned GRUB, or a signed one when it can be had.",
)
@click.option(
    "--fs",
    "fs_type",
    type=click.Choice(["ext4", "ext3", "ext2"]),
    default=None,
    help="Root filesystem for a directory or tarball source (default ext4).",
)
@click.option(
    "--kernel",
    default=None,
    metavar="FILE|FLAVOUR",
    help="A file source: copy this kernel into /boot and boot it. A release: cloud (default) or generic.",
)
@click.option("--initrd", type=_FILE, default=None, help="The initrd that goes with --kernel.")
@click.option("--append", default="", metavar="ARGS", help="More kernel parameters.")
@click.option(
    "-O",
    "--output-format",
    metavar="FORMAT",
    default=None,
    help="raw, qcow2, vmdk, vhd (vpc), vhdx or vdi (default: from OUT's suffix, else raw).",
)
@click.option(
    "--variant",
    type=click.Choice(["minbase", "important", "standard"]),
    default=None,
    help="A release: mmdebstrap's package set (default minbase).",
)
@click.option(
    "--packages",
    multiple=True,
    metavar="A,B,...",
    help="A release: more packages to install (repeatable, comma-separated).",
)
@click.option(
    "--agent", "context", flag_value="agent", default=None, help="A release: install the imagewright agent."
)
@click.option("--cloud-init", "context", flag_value="cloud-init", help="A release: install cloud-init.")
@click.option("--mirror", default=None, metavar="URL", help="A release: the archive to install from.")
@click.option(
    "--snapshot",
    default=None,
    metavar="YYYYMMDDTHHMMSSZ",
    help="A release: install the archive as it was then (a snapshot service; --mirror names its base URL).",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A release: the local package cache (default $IMAGEWRIGHT_CACHE or ~/.cache/imagewright).",
)
@click.option("--no-cache", is_flag=True, help="A release: download every package, keep none.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@json_option
def command(
    source: str | None,
    recipe: Path | None,
    output: Path | None,
    size: int | None,
    swap: int,
    table: str | None,
    firmware: str | None,
    esp_size: int | None,
    efi_loader: str,
    fs_type: str | None,
    kernel: str | None,
    initrd: Path | None,
    append: str,
    output_format: str | None,
    variant: str | None,
    packages: tuple[str, ...],
    context: str | None,
    mirror: str | None,
    snapshot: str | None,
    cache_dir: Path | None,
    no_cache: bool,
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
    BIOS boot partition for GRUB 2 (i386-pc), an EFI System Partition holding a signed shim
    and GRUB (Secure Boot works: the guest's own, from its shim-signed and
    grub-efi-amd64-signed, when it has them, else Debian's; without them, an unsigned GRUB,
    said in the report) and the root partition after them, last on the disk so that it can
    grow (an optional swap partition goes before it). --firmware bios gives an MBR disk (root
    partition 1, bootable; 2 after swap) or, with --table gpt, a BIOS boot partition and the
    root; --firmware uefi an ESP and the root. Both firmwares
    read the same grub.cfg, booting the newest /boot/vmlinuz-* (or --kernel) with root=UUID=
    and a serial console, and /etc/fstab names root and swap by UUID.

    Owners, modes, device nodes, links and extended attributes of a tarball come out as the
    tarball says, also when build runs as an ordinary user. A directory is read as it is on
    disk: run by an ordinary user, the files that user owns become owned by root (0:0) in the
    image (like tar --owner 0 --group 0); files of other owners keep them.

    OUT is written under a temporary name and appears only when complete.

    SOURCE may also name a distribution release, debian:CODENAME or ubuntu:CODENAME: the root
    filesystem is then installed from the distribution's packages by mmdebstrap (no root
    needed where user namespaces are allowed), made a cloud image (kernel, grub-pc kept by
    update-grub and, for UEFI, grub-efi-amd64-signed and shim-signed, serial console, DHCP, SSH
    with first-boot host keys, --agent or --cloud-init, C.UTF-8/UTC, empty machine-id), and
    OUT.packages lists every installed package; --firmware and --table apply as above. Packages
    and finished root filesystems are kept in a local cache, so the next build of the release
    downloads nothing, and the next build of the same image only makes the disk. With
    SOURCE_DATE_EPOCH set (or --snapshot) two builds give the same bytes. --recipe reads all of
    this from a TOML file (see the README).

    \b
    Examples:
      imagewright build --from ec2-root.img -o disk.qcow2 --size 8G --swap 512M
      imagewright build --from rootfs.tar.xz -o disk.raw --firmware uefi --esp-size 200M
      imagewright build --from root.img --kernel vmlinuz --initrd initrd.img -o disk.qcow2
      imagewright build --from debian:bookworm --cloud-init --packages nginx -o web.qcow2
      imagewright build --recipe web.toml
    """
    from imagewright.ops.build.distro.release import is_release_spec

    if recipe is not None or (source is not None and is_release_spec(source)):
        _build_release(
            source, recipe, output, size=size, swap=swap, table=table, firmware=firmware,
            esp_size=esp_size, efi_loader=efi_loader, fs_type=fs_type,
            kernel=kernel, initrd=initrd, append=append, output_format=output_format,
            variant=variant, packages=packages, context=context, mirror=mirror, snapshot=snapshot,
            cache_dir=cache_dir, no_cache=no_cache, force=force, as_json=as_json,
        )  # fmt: skip
        return
    if source is None:
        raise click.UsageError("Give --from SOURCE (or --recipe FILE).")
    if output is None:
        raise click.UsageError("Give -o OUT, the disk to write.")
    release_only = {
        "--variant": variant, "--packages": packages, "--agent/--cloud-init": context, "--mirror": mirror,
        "--snapshot": snapshot, "--cache-dir": cache_dir, "--no-cache": no_cache,
    }  # fmt: skip
    for name, value in release_only.items():
        if value:
            raise click.UsageError(f"{name} applies to a release source such as debian:bookworm.")
    kernel_file: Path | None = None
    if kernel is not None:
        kernel_file = Path(kernel)
        if not kernel_file.is_file():
            raise click.BadParameter(f"{kernel} is not a file.", param_hint="--kernel")
    from imagewright.ops.build import build

    with sigterm_as_interrupt(), staged_progress(enabled=not as_json) as progress:
        report = build(
            Path(source),
            output,
            size=size,
            swap=swap,
            table=table,  # type: ignore[arg-type]
            firmware=firmware,  # type: ignore[arg-type]
            esp_size=esp_size,
            efi_loader=efi_loader,  # type: ignore[arg-type]
            fs_type=fs_type,
            kernel=kernel_file,
            initrd=initrd,
            append=append,
            output_format=output_format,
            force=force,
            progress=progress,
        )
    if as_json:
        emit_json(report.to_dict())
        return
    _print_disk(report)


def _build_release(
    source: str | None,
    recipe_path: Path | None,
    output: Path | None,
    *,
    size: int | None,
    swap: int,
    table: str | None,
    firmware: str | None,
    esp_size: int | None,
    efi_loader: str,
    fs_type: str | None,
    kernel: str | None,
    initrd: Path | None,
    append: str,
    output_format: str | None,
    variant: str | None,
    packages: tuple[str, ...],
    context: str | None,
    mirror: str | None,
    snapshot: str | None,
    cache_dir: Path | None,
    no_cache: bool,
    force: bool,
    as_json: bool,
) -> None:
    from imagewright.ops.build.distro import build_distribution
    from imagewright.ops.build.distro.recipe import Recipe, load_recipe
    from imagewright.ops.build.distro.release import KERNEL_FLAVOURS

    if initrd is not None or fs_type is not None:
        raise click.UsageError("--initrd and --fs apply to file sources, not to a release.")
    if kernel is not None and kernel not in KERNEL_FLAVOURS:
        raise click.BadParameter(
            f"'{kernel}' is not a kernel flavour for a release; choose {' or '.join(KERNEL_FLAVOURS)}.",
            param_hint="--kernel",
        )
    base = load_recipe(recipe_path) if recipe_path is not None else Recipe(release=source or "")
    recipe = base.overridden(
        release=source, output=output, size=size, swap=swap or None, table=table, firmware=firmware,
        append=append or None, output_format=output_format, variant=variant, packages=packages,
        context=context, kernel=kernel, mirror=mirror, snapshot=snapshot,
    )  # fmt: skip
    outputs = recipe.outputs()
    first, *more = outputs
    with sigterm_as_interrupt(), staged_progress(enabled=not as_json) as progress:
        report = build_distribution(
            recipe.release, first.path, variant=recipe.variant, packages=recipe.packages,
            context=recipe.context, kernel=recipe.kernel, mirror=recipe.mirror, snapshot=recipe.snapshot,
            source_date_epoch=recipe.source_date_epoch, size=recipe.size, swap=recipe.swap,
            table=recipe.table, firmware=recipe.firmware, esp_size=esp_size,  # type: ignore[arg-type]
            efi_loader=efi_loader, append=recipe.append,  # type: ignore[arg-type]
            output_format=first.format, files=recipe.files, commands=recipe.commands,
            cache_dir=cache_dir, use_cache=not no_cache, force=force, progress=progress,
        )  # fmt: skip
        converted = _more_outputs(first.path, more, force=force, progress=progress)
    if as_json:
        data = report.to_dict()
        data["more_outputs"] = converted
        emit_json(data)
        return
    out = stdout_console()
    out.print(
        Text(
            f"built {report.output} from {report.release} ({report.variant}, {report.context}, "
            f"{report.kernel_package}) with mmdebstrap ({report.mode} mode)"
        )
    )
    out.print(
        Text(
            f"packages from {report.sources}: {report.packages} installed, "
            f"{report.packages_downloaded} downloaded"
        )
    )
    out.print(Text(f"manifest: {report.manifest}"))
    for custom in report.customizations:
        out.print(Text(f"  {custom.name}: {'; '.join(custom.changes) or custom.summary}"))
    for operation in report.prepare:
        changes = "; ".join(f"{c['action']} {c['path']}" for c in operation["changes"]) or "no change"
        out.print(Text(f"  prepare {operation['name']}: {changes}"))
    if report.source_date_epoch is not None:
        out.print(Text(f"SOURCE_DATE_EPOCH={report.source_date_epoch}"))
    if report.disk is not None:
        _print_disk(report.disk)
    for path in converted:
        out.print(Text(f"also wrote {path}"))
    for note in report.notes:
        out.print(Text(f"note: {note}"))
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report.phase_seconds.items())
    out.print(Text(f"done in {report.seconds:.1f} s ({phases})"))


def _more_outputs(first: Path, more: list[Any], *, force: bool, progress: Any) -> list[str]:
    """A recipe's further outputs: the first disk converted to each."""
    from imagewright.ops.convert import convert

    written: list[str] = []
    for item in more:
        convert(first, item.path, output_format=item.format, checksums=(), force=force, progress=progress)
        written.append(str(item.path))
    return written


def _print_disk(report: BuildReport) -> None:
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
        whose = "the guest's own" if esp.loader.owner == "guest" else "build's"
        out.print(
            Text(
                f"UEFI: {chain}, {whose}, at EFI/BOOT/BOOTX64.EFI and EFI/{esp.loader.vendor_directory} "
                f"on partition {esp.partition} ({esp.fat_type})"
            )
        )
    for key, value in report.image_properties.items():
        out.print(Text(f"image property: {key}={value}"))
    kernel_line = report.kernel.kernel + (f" + {report.kernel.initrd}" if report.kernel.initrd else "")
    out.print(Text(f"boots {kernel_line} ({report.kernel.origin})"))
    out.print(Text(f"kernel command line: {' '.join(report.kernel_command_line)}"))
    if report.boot_loader_package_program is not None:
        out.print(Text(f"the guest keeps its boot menu with {report.boot_loader_package_program}"))
    for note in report.notes:
        out.print(Text(f"note: {note}"))
    out.print(Text(f"done in {report.seconds:.1f} s"))
