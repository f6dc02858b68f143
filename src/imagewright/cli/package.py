"""``imagewright package``: make and check packages (OVA, EC2 image bundles)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from imagewright.cli.common import SIZE, json_option, sigterm_as_interrupt, staged_progress
from imagewright.cli.render import emit_json, stdout_console
from imagewright.formats.base import Limits
from imagewright.units import format_size


@click.group("package")
def command() -> None:
    """Make and check packages: OVA (signed or not) and EC2 image bundles.

    \b
    Examples:
      imagewright package ova disk.qcow2 -o vm.ova --os debian64 --sign key.pem --cert cert.pem
      imagewright package verify vm.ova --ca ca.pem
    """


def _limits(max_virtual_size: int | None) -> Limits:
    return Limits() if max_virtual_size is None else Limits(max_virtual_size=max_virtual_size)


@command.command("ova")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="The OVA to write."
)
@click.option("--name", help="The virtual machine's name (default: from the output's name).")
@click.option("--cpus", type=click.IntRange(1, 768), default=1, show_default=True)
@click.option("--memory", "memory_mib", type=click.IntRange(4), default=1024, show_default=True, help="MiB.")
@click.option("--nic", type=click.Choice(["e1000", "vmxnet3", "virtio"]), default="e1000", show_default=True)
@click.option(
    "--disk-controller", type=click.Choice(["scsi", "ide", "sata"]), default="scsi", show_default=True
)
@click.option(
    "--os",
    "os_name",
    type=click.Choice(
        [
            "debian64",
            "debian",
            "ubuntu64",
            "ubuntu",
            "rhel64",
            "rhel",
            "sles64",
            "freebsd64",
            "linux64",
            "other64",
            "other",
        ]
    ),
    default="other64",
    show_default=True,
)
@click.option("--ovf-version", type=click.Choice(["1.0", "2.0"]), default="1.0", show_default=True)
@click.option("--cdrom", is_flag=True, help="Give the machine an (empty) CD-ROM drive.")
@click.option("--network", default="VM Network", show_default=True, help="The network the NIC connects to.")
@click.option("--product", help="ProductSection: the product's name.")
@click.option("--vendor", help="ProductSection: the vendor.")
@click.option("--version", "product_version", help="ProductSection: the product's version.")
@click.option(
    "--eula", type=click.Path(path_type=Path, dir_okay=False, exists=True), help="A licence text file."
)
@click.option(
    "--sign", "key_path", type=click.Path(path_type=Path, dir_okay=False), help="RSA private key (PEM)."
)
@click.option(
    "--cert", "cert_path", type=click.Path(path_type=Path, dir_okay=False), help="Its certificate (PEM)."
)
@click.option(
    "--digest", type=click.Choice(["sha1", "sha256", "sha512"]), default="sha256", show_default=True
)
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
@click.option(
    "--max-virtual-size", type=SIZE, default=None, help="Refuse sources larger than this (default 16T)."
)
@json_option
def ova_command(
    image: Path,
    output: Path,
    name: str | None,
    cpus: int,
    memory_mib: int,
    nic: str,
    disk_controller: str,
    os_name: str,
    ovf_version: str,
    cdrom: bool,
    network: str,
    product: str | None,
    vendor: str | None,
    product_version: str | None,
    eula: Path | None,
    key_path: Path | None,
    cert_path: Path | None,
    digest: str,
    force: bool,
    max_virtual_size: int | None,
    as_json: bool,
) -> None:
    """Package IMAGE (any format imagewright reads) as an OVA, in one pass.

    The disk becomes a streamOptimized VMDK; the descriptor (NAME.ovf), manifest (NAME.mf)
    and, with --sign/--cert, the certificate (NAME.cert) come first, as streaming importers
    need them.
    """
    from imagewright.errors import InvalidArgumentError
    from imagewright.package.ova import OvaOptions, default_name, package_ova
    from imagewright.package.ovf_descriptor import MachineSpec
    from imagewright.package.signing import load_signer

    if (key_path is None) != (cert_path is None):
        raise click.UsageError("--sign and --cert go together.")
    eula_text = None
    if eula is not None:
        try:
            eula_text = eula.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InvalidArgumentError(f"Cannot read the licence {eula} as UTF-8 text ({err}).") from None
    machine = MachineSpec(
        name=name or default_name(output),
        cpus=cpus,
        memory_mib=memory_mib,
        nic=nic,
        controller=disk_controller,
        os=os_name,
        ovf_version="2.0" if ovf_version == "2.0" else "1.0",
        cdrom=cdrom,
        network=network,
        product=product,
        vendor=vendor,
        version=product_version,
        eula=eula_text,
    )
    signer = load_signer(key_path, cert_path) if key_path is not None and cert_path is not None else None
    options = OvaOptions(machine=machine, digest=digest, signer=signer)
    with sigterm_as_interrupt(), staged_progress(enabled=not as_json) as progress:
        result = package_ova(
            image, output, options, force=force, limits=_limits(max_virtual_size), progress=progress
        )
    if as_json:
        emit_json(result.to_dict())
        return
    out = stdout_console()
    signed = "signed" if result.signed else "unsigned"
    size = format_size(result.size)
    out.print(Text(f"packaged {image} ({result.source_format}) -> {result.output} ({signed}, {size})"))
    out.print(
        Text(
            f"virtual size {format_size(result.virtual_size)}, {format_size(result.populated_size)} of data, "
            f"{result.seconds:.1f} s"
        )
    )
    for member in result.members:
        out.print(Text(f"  {member.name:<40} {member.size:>14}  {result.digest_algorithm} {member.digest}"))


@command.command("verify")
@click.argument("package", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--ca",
    "ca_paths",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Trusted certificate(s) (PEM) the signing certificate must chain to.",
)
@click.option(
    "--max-virtual-size", type=SIZE, default=None, help="Refuse disks larger than this (default 16T)."
)
@json_option
def verify_command(
    package: Path, ca_paths: tuple[Path, ...], max_virtual_size: int | None, as_json: bool
) -> None:
    """Check an OVA: member order, every digest, the signature and its certificate chain,
    the descriptor against the members, and each disk's own safety.

    Exit status 0 when it checks out, 1 when anything is wrong.
    """
    from imagewright.cli.common import byte_progress
    from imagewright.package.ova_verify import verify_ova
    from imagewright.package.signing import load_certificate_file

    trusted = [cert for path in ca_paths for cert in load_certificate_file(path)]
    with sigterm_as_interrupt(), byte_progress("verifying", enabled=not as_json) as progress:
        result = verify_ova(package, trusted=trusted, limits=_limits(max_virtual_size), progress=progress)
    if as_json:
        emit_json(result.to_dict())
    else:
        out = stdout_console()
        out.print(Text(f"package:     {package}"))
        out.print(Text(f"descriptor:  {result.descriptor or '-'}"))
        out.print(Text(f"manifest:    {result.manifest or '-'}"))
        for member in result.members:
            state = "ok" if member.ok else "MISMATCH"
            out.print(Text(f"  {member.name:<40} {', '.join(member.digests)}  {state}"))
        signature = result.signature
        if signature is None:
            out.print(Text("signature:   none"))
        else:
            state = "valid" if signature.valid else "INVALID"
            chain = f", {signature.chain.status}" if signature.chain is not None else ""
            out.print(Text(f"signature:   {signature.algorithm} {state} ({signature.subject}{chain})"))
        for name, disk in result.disks.items():
            kind = disk["format"] + (f" ({disk['subformat']})" if disk["subformat"] else "")
            size = format_size(disk["virtual_size"]) if disk["virtual_size"] is not None else "?"
            out.print(Text(f"disk:        {name}: {kind}, {size}, {'safe' if disk['safe'] else 'REFUSED'}"))
        for warning in result.warnings:
            out.print(Text(f"warning:     {warning}"))
        for problem in result.problems:
            out.print(Text(f"problem:     {problem}"))
        out.print(Text(f"verdict:     {'ok' if result.ok else 'refused'}"))
    if not result.ok:
        raise click.exceptions.Exit(1)


@command.command("bundle")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-d", "--destination", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("-u", "--user", required=True, help="Your account ID.")
@click.option("-c", "--cert", "cert_path", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option("-k", "--privatekey", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option(
    "--ec2cert",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The cloud's certificate.",
)
@click.option(
    "-r",
    "--arch",
    type=click.Choice(["i386", "x86_64", "armhf", "ppc", "ppc64", "ppc64le"]),
    default="x86_64",
)
@click.option("--kernel", help="aki-… to link a kernel, or 'true': IMAGE is a kernel.")
@click.option("--ramdisk", help="ari-… to link a ramdisk, or 'true': IMAGE is a ramdisk.")
@click.option("-B", "--block-device-mapping", "mappings", help="VIRTUAL=DEVICE,… (ami=sda1,root=/dev/sda1).")
@click.option("--productcodes", help="CODE1,CODE2,…")
@click.option("--part-size", type=SIZE, default="10M", show_default=True)
@click.option("-p", "--prefix", help="The bundle's file name prefix (default: the image's name).")
@click.option("--force", is_flag=True, help="Overwrite an existing bundle of the same prefix.")
@click.option(
    "--max-virtual-size", type=SIZE, default=None, help="Refuse sources larger than this (default 16T)."
)
@json_option
def bundle_command(
    image: Path,
    destination: Path,
    user: str,
    cert_path: Path,
    privatekey: Path,
    ec2cert: Path,
    arch: str,
    kernel: str | None,
    ramdisk: str | None,
    mappings: str | None,
    productcodes: str | None,
    part_size: int,
    prefix: str | None,
    force: bool,
    max_virtual_size: int | None,
    as_json: bool,
) -> None:
    """Bundle IMAGE for an EC2-style cloud as euca2ools does, in one pass.

    tar, SHA-1, gzip (every core), AES-128-CBC, parts and a signed manifest. A machine
    image is bundled as its raw disk (any source format); --kernel true / --ramdisk true
    bundle the file as it is.
    """
    from imagewright.package.bundle import BundleOptions, bundle_image, parse_block_device_mappings

    options = BundleOptions(
        user=user,
        user_certificate=cert_path,
        private_key=privatekey,
        cloud_certificate=ec2cert,
        architecture=arch,
        kernel=kernel,
        ramdisk=ramdisk,
        block_device_mappings=parse_block_device_mappings(mappings) if mappings else (),
        product_codes=tuple(c.strip() for c in productcodes.split(",") if c.strip()) if productcodes else (),
        part_size=part_size,
        prefix=prefix,
    )
    with sigterm_as_interrupt(), staged_progress(enabled=not as_json) as progress:
        result = bundle_image(
            image, destination, options, force=force, limits=_limits(max_virtual_size), progress=progress
        )
    if as_json:
        emit_json(result.to_dict())
        return
    out = stdout_console()
    out.print(Text(f"bundled {image} -> {result.manifest} ({result.image_type})"))
    out.print(
        Text(
            f"image {format_size(result.image_size)}, {len(result.parts)} parts, "
            f"{format_size(result.bundled_size)} bundled, {result.seconds:.1f} s"
        )
    )
    out.print(Text(f"sha1  {result.image_digest}  (tar stream)"))


def _print_check(check: object) -> None:
    from imagewright.package.bundle import BundleCheck

    assert isinstance(check, BundleCheck)
    out = stdout_console()
    out.print(Text(f"manifest:    {check.manifest} ({check.image_type}, {format_size(check.image_size)})"))
    out.print(Text(f"signature:   {check.signature}"))
    out.print(Text(f"parts:       {check.parts_checked} checked"))
    out.print(Text(f"image:       {check.image_digest}"))
    for warning in check.warnings:
        out.print(Text(f"warning:     {warning}"))
    for problem in check.problems:
        out.print(Text(f"problem:     {problem}"))
    out.print(Text(f"verdict:     {'ok' if check.ok else 'refused'}"))


@command.command("verify-bundle")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("-c", "--cert", "cert_path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "-k",
    "--privatekey",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="With it, the parts are also decrypted and the image digest checked.",
)
@json_option
def verify_bundle_command(
    manifest: Path, cert_path: Path | None, privatekey: Path | None, as_json: bool
) -> None:
    """Check an EC2 bundle: the manifest's signature, every part's SHA-1, the image digest."""
    from imagewright.package.bundle import verify_bundle

    with sigterm_as_interrupt():
        check = verify_bundle(manifest, certificate=cert_path, private_key=privatekey)
    if as_json:
        emit_json(check.to_dict())
    else:
        _print_check(check)
    if not check.ok:
        raise click.exceptions.Exit(1)


@command.command("unbundle")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("-d", "--destination", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option(
    "-k", "--privatekey", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True
)
@click.option("-c", "--cert", "cert_path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--force", is_flag=True, help="Overwrite the image if it exists.")
@json_option
def unbundle_command(
    manifest: Path, destination: Path, privatekey: Path, cert_path: Path | None, force: bool, as_json: bool
) -> None:
    """Unbundle an EC2 bundle into DESTINATION, refusing a tampered one before writing anything."""
    from imagewright.package.bundle import unbundle

    with sigterm_as_interrupt():
        result = unbundle(manifest, destination, privatekey, certificate=cert_path, force=force)
    if as_json:
        emit_json({"image": result.image, "size": result.size, "check": result.check.to_dict()})
        return
    stdout_console().print(Text(f"unbundled {manifest} -> {result.image} ({format_size(result.size)})"))
