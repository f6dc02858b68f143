"""``imagewright publish``: every output of one image from one read."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.text import Text

from imagewright.cli.common import (
    SIZE,
    cloud_options,
    connect_cloud,
    json_option,
    parse_properties,
    sigterm_as_interrupt,
    staged_progress,
)
from imagewright.cli.render import emit_json, stdout_console
from imagewright.formats.base import Limits
from imagewright.ops.prepare.model import ANY_DATASOURCE
from imagewright.units import format_size

if TYPE_CHECKING:
    from rich.console import Console

    from imagewright.package.tuned_source import TuningReport


@click.command("publish")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--to",
    "targets",
    required=True,
    help="Comma-separated targets: raw, raw.gz, vmdk, ova, bundle, qcow2, registry (--cloud's images).",
)
@click.option("-d", "--directory", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--name", help="Base name of the outputs (default: IMAGE's name up to its first dot).")
@click.option("--force", is_flag=True, help="Overwrite outputs that exist.")
@click.option(
    "--os", "os_name", default="other64", show_default=True, help="ova: the guest OS (see package ova)."
)
@click.option("--cpus", type=click.IntRange(1, 768), default=1, show_default=True, help="ova: virtual CPUs.")
@click.option(
    "--memory", "memory_mib", type=click.IntRange(4), default=1024, show_default=True, help="ova: MiB."
)
@click.option(
    "--sign", "sign_key", type=click.Path(path_type=Path, dir_okay=False), help="ova: RSA signing key."
)
@click.option("--sign-cert", type=click.Path(path_type=Path, dir_okay=False), help="ova: its certificate.")
@click.option("--user", help="bundle: your account ID.")
@click.option(
    "--cert", "user_cert", type=click.Path(path_type=Path, dir_okay=False), help="bundle: your certificate."
)
@click.option(
    "--privatekey", type=click.Path(path_type=Path, dir_okay=False), help="bundle: your private key."
)
@click.option(
    "--ec2cert", type=click.Path(path_type=Path, dir_okay=False), help="bundle: the cloud's certificate."
)
@click.option("--arch", default="x86_64", show_default=True, help="bundle: the image's architecture.")
@click.option("--kernel", help="bundle, registry: the kernel (aki-…; for registry also an image id or name).")
@click.option(
    "--ramdisk", help="bundle, registry: the ramdisk (ari-…; for registry also an image id or name)."
)
@click.option(
    "--visibility",
    type=click.Choice(["public", "community", "shared", "private"]),
    default=None,
    help="registry: the images' visibility.",
)
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE", help="registry: a property.")
@click.option(
    "--boot-tuning/--no-boot-tuning",
    default=True,
    show_default=True,
    help="Tune the first boot of the published guest, as prepare --boot-tuning does (GRUB timeout 0 "
    "and a serial console, cloud-init's datasource pinned, no wait-online), on a scratch copy: "
    "IMAGE is never written. A disk without a Linux root filesystem is published as it is.",
)
@click.option(
    "--datasource",
    metavar="KIND[,KIND]",
    default=ANY_DATASOURCE,
    show_default=True,
    help="With --boot-tuning, as for prepare: the cloud-init datasource the instances see — ec2 (the "
    "metadata service), nocloud, configdrive, opennebula — or several, media first: an attached "
    "medium is used, else the metadata service.",
)
@cloud_options
@click.option(
    "--max-virtual-size", type=SIZE, default=None, help="Refuse sources larger than this (default 16T)."
)
@json_option
def command(
    image: Path,
    targets: str,
    directory: Path,
    name: str | None,
    force: bool,
    os_name: str,
    cpus: int,
    memory_mib: int,
    sign_key: Path | None,
    sign_cert: Path | None,
    user: str | None,
    user_cert: Path | None,
    privatekey: Path | None,
    ec2cert: Path | None,
    arch: str,
    kernel: str | None,
    ramdisk: str | None,
    visibility: str | None,
    properties: tuple[str, ...],
    boot_tuning: bool,
    datasource: str,
    cloud_name: str | None,
    clouds_file: str | None,
    max_virtual_size: int | None,
    as_json: bool,
) -> None:
    """Write every output of IMAGE (qcow2, raw.gz, OVA, EC2 bundle ...) from one read.

    One inspection, one pass over the source, one compression shared by the compressed
    outputs, one checksum set: DIRECTORY/SHA256SUMS lists every file written.

    The registry target uploads to --cloud's image service (a cloud of clouds.yaml, as the
    openstack CLI reads it; ours or any Glance): the disk image (the qcow2, raw or vmdk of this
    publish, else a qcow2 made for the upload), linked to --kernel/--ramdisk as kernel_id and
    ramdisk_id, and the OVA when it is a target; the checksums the registry reports are checked
    against the bytes sent. Nothing is put in place unless every upload succeeded.

    Every output holds the guest boot-tuned (--no-boot-tuning: the source's bytes as they are);
    the report lists the prepare operations applied, or why the tuning was skipped.

    \b
    Example:
      imagewright publish disk.qcow2 --to qcow2,raw.gz,ova,bundle -d out/ \\
          --os debian64 --user 123456789012 --cert cert.pem --privatekey pk.pem --ec2cert cloud.pem
      imagewright publish disk.qcow2 --to qcow2,ova,registry -d out/ --cloud mycloud
      imagewright publish disk.qcow2 --to qcow2 -d out/ --datasource nocloud   # NoCloud seeds only
      imagewright publish disk.qcow2 --to raw.gz -d out/ --no-boot-tuning     # bytes as they are
    """
    from imagewright.package.bundle import BundleOptions
    from imagewright.package.ova import OvaOptions
    from imagewright.package.ovf_descriptor import MachineSpec
    from imagewright.package.publish import parse_targets, publish
    from imagewright.package.signing import load_signer
    from imagewright.package.tuned_source import BootTuning

    wanted = parse_targets(targets, extra=("registry",))
    to_registry = "registry" in wanted
    if not to_registry and (visibility or properties or cloud_name or clouds_file):
        raise click.UsageError("--cloud, --clouds-file, --visibility and --property go with --to registry.")
    if not to_registry and "bundle" not in wanted and (kernel or ramdisk):
        raise click.UsageError("--kernel and --ramdisk go with --to bundle or registry.")
    base = name or image.name.split(".", 1)[0] or "image"
    if (sign_key is None) != (sign_cert is None):
        raise click.UsageError("--sign and --sign-cert go together.")
    ova = None
    if "ova" in wanted:
        signer = load_signer(sign_key, sign_cert) if sign_key is not None and sign_cert is not None else None
        ova = OvaOptions(MachineSpec(name=base, cpus=cpus, memory_mib=memory_mib, os=os_name), signer=signer)
    bundle = None
    if "bundle" in wanted:
        if not (user and user_cert and privatekey and ec2cert):
            raise click.UsageError("The bundle target needs --user, --cert, --privatekey and --ec2cert.")
        bundle = BundleOptions(
            user=user,
            user_certificate=user_cert,
            private_key=privatekey,
            cloud_certificate=ec2cert,
            architecture=arch,
            kernel=kernel,
            ramdisk=ramdisk,
        )
    if not boot_tuning and datasource != ANY_DATASOURCE:
        raise click.UsageError("--datasource goes with --boot-tuning.")
    tuning = BootTuning(datasource) if boot_tuning else None
    limits = Limits() if max_virtual_size is None else Limits(max_virtual_size=max_virtual_size)
    uploads = []
    with sigterm_as_interrupt(), staged_progress(enabled=not as_json) as progress:
        if to_registry:
            from imagewright.registry.publishing import publish_to_registry

            cloud = connect_cloud(cloud_name, clouds_file)
            both = publish_to_registry(
                cloud,
                image,
                directory,
                wanted,
                name=base,
                kernel=kernel,
                ramdisk=ramdisk,
                visibility=visibility,
                properties=parse_properties(properties),
                ova=ova,
                bundle=bundle,
                force=force,
                limits=limits,
                progress=progress,
                boot_tuning=tuning,
            )
            result, uploads = both.published, both.uploads
            if as_json:
                emit_json(both.to_dict())
                return
        else:
            result = publish(
                image,
                directory,
                wanted,
                name=base,
                ova=ova,
                bundle=bundle,
                force=force,
                limits=limits,
                progress=progress,
                boot_tuning=tuning,
            )
    if as_json:
        emit_json(result.to_dict())
        return
    out = stdout_console()
    out.print(
        Text(
            f"published {result.source} ({result.source_format}, {format_size(result.virtual_size)}) "
            f"in {result.seconds:.1f} s"
        )
    )
    width = max(len(Path(f.path).name) for f in result.files)
    out.print(Text(f"{'target':<8} {'file':<{width}} {'size':>10}  sha256"))
    for published in result.files:
        size = format_size(published.size)
        out.print(
            Text(f"{published.target:<8} {Path(published.path).name:<{width}} {size:>10}  {published.sha256}")
        )
    out.print(Text(f"checksums: {result.sums}"))
    _print_tuning(out, result.tuning)
    for upload in uploads:
        out.print(
            Text(
                f"registry {upload.cloud}: {upload.id} {upload.name!r} ({upload.disk_format}/"
                f"{upload.container_format}, {format_size(upload.size)}) {upload.status}, checksum "
                f"{upload.checksum} verified"
            )
        )


def _print_tuning(out: Console, tuning: TuningReport | None) -> None:
    """The boot-tuning lines of the report: each change as prepare prints it, or why none."""
    if tuning is None:
        out.print(Text("boot-tuning: off (--no-boot-tuning); the outputs hold the source's guest as it is"))
        return
    if not tuning.applied:
        out.print(Text(f"boot-tuning: skipped, {tuning.note}; the outputs hold the source's guest as it is"))
        return
    count = tuning.change_count
    out.print(
        Text(
            f"boot-tuning ({tuning.filesystem}, datasource {tuning.datasource}): "
            f"{count} change{'' if count == 1 else 's'} in {tuning.seconds:.1f} s"
        )
    )
    for operation in tuning.operations:
        if not operation.changes:
            out.print(
                Text(
                    f"  {operation.name}  nothing to do" + (f" ({operation.note})" if operation.note else "")
                )
            )
        for change in operation.changes:
            out.print(Text(f"  {change.describe(dry_run=False)}"))
        if operation.changes and operation.note:
            out.print(Text(f"  ({operation.note})"))
