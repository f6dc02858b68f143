"""``build``: a bootable, partitioned disk from a flat filesystem image, a rootfs tree or a tarball.

The classic job of turning an EC2/Eucalyptus-style image (a bare filesystem; the cloud supplied
kernel and ramdisk) or a debootstrap/``docker export`` tree into a whole disk a KVM cloud boots:
partition table, root filesystem, swap, GRUB in the MBR, ``grub.cfg``, ``/etc/fstab`` — without
root, loop devices or mounting anything. The steps, in order:

1. Judge the source (``source.py``: inspect refuses hostile images and tarballs) and the sizes
   (``sizing.py``): the content, ext4's own metadata, swap and alignment must fit ``--size``.
2. Create the raw image under a temporary name next to the output; partition it with sfdisk
   (``layout.py`` documents the layout and which firmware each ``--firmware`` boots under)
   and read the table back with our own reader: the two must agree. A disk that boots under
   UEFI first gets its boot loader (``efiloader.py``: Debian's signed shim and GRUB, else an
   unsigned GRUB, said in the report) and the ESP's room is checked — unless the source carries
   its own signed shim and GRUB (or is a filesystem image, whose files are not listed before it
   is copied): then the loader is chosen in step 4, from the new root filesystem.
3. Write the root filesystem into its partition's byte range (``rootfs.py``; tarballs through a
   rootless staging tree, ``tarball.py`` and ``metadata.py``).
4. Copy the guest's own signed UEFI chain out of the root filesystem when it has one (its
   GRUB checks the kernel its distribution signed; ``efiloader.guest_loader``). Put the kernel
   (``--kernel``) into /boot or choose the newest there, write ``grub.cfg`` and
   ``/etc/fstab`` (``configure.py``, ``grubcfg.py``, ``fstab.py``).
5. Write the swap signature (``swap.py``), install GRUB for BIOS (``bootloader.py``) and write
   the EFI System Partition (``esp.py``), as the firmware choice asks.
6. Check the result: ``e2fsck -fn`` must find the root filesystem clean, ``fsck.fat -n`` the
   ESP, and ``inspect`` must see the table, the filesystems, GRUB's boot code and the UEFI
   loaders, and say the disk boots under exactly the firmware asked for.
7. Convert to the output format if it is not raw, and move the result into place. Any failure,
   Ctrl-C included, leaves neither the output nor a temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagewright.binary import FileSource
from imagewright.disk.partitions import read_partition_table
from imagewright.disk.table import PartitionTable
from imagewright.errors import BuildError, InvalidArgumentError, OutputExistsError
from imagewright.files import AtomicOutput, ScratchFiles, memory_scratch_directory
from imagewright.formats.base import Limits
from imagewright.guest.e2fs import E2fsGuest
from imagewright.inspection import inspect_image
from imagewright.ops.build.bootloader import BootloaderPlacement, install_grub_bios
from imagewright.ops.build.configure import (
    GivenKernel,
    check_given_kernel,
    install_kernel,
    write_fstab,
    write_grub_config,
)
from imagewright.ops.build.efiloader import EfiLoader, LoaderChoice, choose_loader, guest_loader
from imagewright.ops.build.esp import ESP_LABEL, EspPlacement, check_esp, check_esp_room, write_esp
from imagewright.ops.build.grubcfg import KernelChoice, command_line, kernel_parameters
from imagewright.ops.build.kernelhook import install_kernel_hook, menu_program
from imagewright.ops.build.layout import (
    DEFAULT_ESP_BYTES,
    DiskLayout,
    Firmware,
    LayoutShape,
    PlannedPartition,
    TableKind,
    check_table,
    minimum_disk_size,
    plan_layout,
    resolve_shape,
    round_up_mib,
)
from imagewright.ops.build.rootfs import RootFilesystem, directory_plan, write_filesystem_image, write_tree
from imagewright.ops.build.sizing import check_tree_fits, default_disk_size, root_bytes_needed
from imagewright.ops.build.source import (
    EXT_TYPES,
    BuildSource,
    DirectorySource,
    FilesystemImageSource,
    TarballSource,
    open_source,
)
from imagewright.ops.build.swap import write_swap
from imagewright.ops.build.tarball import extract_tarball
from imagewright.ops.convert.plan import OutputPlan, plan_output
from imagewright.programs import e2fs, sfdisk
from imagewright.units import format_size

__all__ = ["BuildReport", "Finish", "PartitionReport", "Progress", "build"]

#: ``progress(stage, done, total)``: "extracting", "copying the filesystem", "converting" ...
Progress = Callable[[str, int, int | None], None]
#: ``finish(raw_image)``: a last step on the complete raw disk, before it is converted and
#: moved into place (a distribution build installs the agent there); a failure leaves nothing.
Finish = Callable[[Path], None]


@dataclass
class PartitionReport:
    """One partition of the built disk (sectors of 512 bytes)."""

    number: int
    role: str
    start: int
    sectors: int
    size: int
    type: str
    #: The partition's own id: the GPT partition GUID, or PARTUUID ``DISKID-NN`` on MBR.
    partition_uuid: str | None
    name: str | None
    bootable: bool
    filesystem: str | None = None
    filesystem_uuid: str | None = None
    label: str | None = None


@dataclass
class BuildReport:
    """What ``build`` made (JSON via ``to_dict``)."""

    source: str
    #: "filesystem-image", "directory" or "tarball".
    source_kind: str
    #: The source's image format or the tarball's compression ("raw", "qcow2", "gzip", None ...).
    source_format: str | None
    output: str
    output_format: str
    output_compression: str | None
    disk_size: int
    table: str
    disk_id: str
    partitions: list[PartitionReport]
    root: RootFilesystem
    swap_uuid: str | None
    #: GRUB for BIOS; None on a UEFI-only disk.
    bootloader: BootloaderPlacement | None
    kernel: KernelChoice
    kernel_command_line: list[str]
    seconds: float
    notes: list[str] = field(default_factory=list)
    #: "hybrid", "bios" or "uefi" (``--firmware``).
    firmware: Firmware = "bios"
    #: The EFI System Partition; None on a BIOS-only disk.
    esp: EspPlacement | None = None
    #: The guest's own program that rewrites the GRUB menu (``/usr/sbin/update-grub``), or
    #: None when it has no boot loader package (then ``kernel_hooks`` keep the menu).
    boot_loader_package_program: str | None = None
    #: The kernel post-install/-remove hooks build installed (see ``kernelhook.py``).
    kernel_hooks: list[str] = field(default_factory=list)

    @property
    def boots_under(self) -> list[str]:
        return [name for name in ("bios", "uefi") if name in self.firmware or self.firmware == "hybrid"]

    @property
    def image_properties(self) -> dict[str, str]:
        """The Glance image properties a cloud needs to start the disk right: ``hw_firmware_type``
        only when it boots under UEFI alone (hybrid and BIOS disks boot on every default);
        ``os_secure_boot`` "optional" on top when the ESP starts Debian's signed chain."""
        properties: dict[str, str] = {}
        if self.firmware == "uefi":
            properties["hw_firmware_type"] = "uefi"
        if self.esp is not None and self.esp.secure_boot and self.firmware == "uefi":
            properties["os_secure_boot"] = "optional"
        return properties

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_kind": self.source_kind,
            "source_format": self.source_format,
            "output": self.output,
            "output_format": self.output_format,
            "output_compression": self.output_compression,
            "disk_size": self.disk_size,
            "table": self.table,
            "disk_id": self.disk_id,
            "partitions": [asdict(p) for p in self.partitions],
            "root_filesystem": self.root.to_dict(),
            "swap_uuid": self.swap_uuid,
            "firmware": self.firmware,
            "boots_under": self.boots_under,
            "image_properties": self.image_properties,
            "bootloader": self.bootloader.to_dict() if self.bootloader is not None else None,
            "uefi": self.esp.to_dict() if self.esp is not None else None,
            "kernel": self.kernel.to_dict(),
            "kernel_command_line": list(self.kernel_command_line),
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
            "boot_loader_package_program": self.boot_loader_package_program,
            "kernel_hooks": list(self.kernel_hooks),
        }


def _output_plan(output: Path, output_format: str | None) -> OutputPlan:
    try:
        return plan_output(output, output_format=output_format, checksums=())
    except InvalidArgumentError:
        if output_format is not None:
            raise
        # A name that says nothing about its format ("disk", "disk.img" is raw anyway): raw.
        return plan_output(output, output_format="raw", checksums=())


def build(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    size: int | None = None,
    swap: int = 0,
    table: TableKind | None = None,
    firmware: Firmware | None = None,
    esp_size: int | None = None,
    efi_loader: LoaderChoice = "auto",
    cache_dir: Path | None = None,
    fs_type: str | None = None,
    kernel: str | os.PathLike[str] | None = None,
    initrd: str | os.PathLike[str] | None = None,
    append: str = "",
    output_format: str | None = None,
    force: bool = False,
    limits: Limits | None = None,
    progress: Progress | None = None,
    finish: Finish | None = None,
) -> BuildReport:
    """Build a bootable disk at ``output`` from ``source``; see the module docstring for how.

    ``size``: the disk's size in bytes (rounded up to whole MiB; default: the content plus a
    quarter, in whole GiB). ``swap``: bytes of swap (0: no swap partition). ``table``: "mbr" or
    "gpt"; ``firmware``: "hybrid", "bios" or "uefi" (both None: a hybrid GPT disk; see
    ``layout.resolve_shape``). ``esp_size``: bytes of the EFI System Partition (default
    100 MiB). ``efi_loader``: "auto" (the guest's own signed shim and GRUB, else Debian's
    signed ones, else an unsigned GRUB), "signed" or "unsigned"; ``cache_dir``: where the
    signed packages are kept (default ``$IMAGEWRIGHT_CACHE``). ``fs_type``: ext2/ext3/ext4 for
    a tree or tarball (default ext4).
    ``kernel``/``initrd``: host files copied into /boot and booted. ``append``: more kernel
    parameters. ``output_format``: raw, qcow2, vmdk, vhd, vhdx or vdi (default: from the
    output's name, else raw).
    ``finish``: called with the complete raw disk before conversion (see ``Finish``).
    """
    started = time.monotonic()
    src_path, out_path = Path(source), Path(output)
    limits = limits or Limits()
    if swap < 0:
        raise InvalidArgumentError("--swap cannot be negative.")
    shape, shape_notes = resolve_shape(
        table, firmware, swap_size=swap, esp_size=DEFAULT_ESP_BYTES if esp_size is None else esp_size
    )
    if not shape.uefi and (esp_size is not None or efi_loader != "auto"):
        option = "--esp-size" if esp_size is not None else "--efi-loader"
        raise InvalidArgumentError(
            f"{option} applies to a disk that boots under UEFI; this one boots under BIOS only."
        )
    if fs_type is not None and fs_type not in EXT_TYPES:
        raise InvalidArgumentError(f"'{fs_type}' is not a filesystem build makes; choose ext4, ext3 or ext2.")
    if initrd is not None and kernel is None:
        raise InvalidArgumentError(
            "--initrd needs --kernel: an initrd is booted with the kernel it belongs to."
        )
    given = GivenKernel(Path(kernel), Path(initrd) if initrd is not None else None) if kernel else None
    if given is not None:
        check_given_kernel(given)
    kernel_parameters(append)  # a bad --append fails now, not after the copy
    if size is not None and size <= 0:
        raise InvalidArgumentError("--size must be a positive size such as 4G.")
    plan = _output_plan(out_path, output_format)
    if out_path.exists() and not force:
        raise OutputExistsError(f"{out_path} already exists; use --force to overwrite it.")
    if src_path.exists() and out_path.exists() and os.path.samefile(src_path, out_path):
        raise InvalidArgumentError("The output would overwrite the source; choose another output name.")

    with AtomicOutput(out_path, force=force) as out:
        # A compressed filesystem image is decompressed (and judged) next to the output.
        src = open_source(src_path, limits=limits, spool=out.scratch)
        if isinstance(src, FilesystemImageSource):
            if fs_type is not None and fs_type != src.fs_type:
                raise InvalidArgumentError(
                    f"The source is a {src.fs_type} filesystem, copied as it is; --fs {fs_type} applies only "
                    "to directories and tarballs."
                )
            if src.fs_type not in EXT_TYPES:
                raise BuildError(
                    f"{src.path} holds a {src.fs_type} filesystem; build copies ext2/3/4 filesystems "
                    f"itself and needs libguestfs (Debian: libguestfs-tools) to read {src.fs_type}, which "
                    "this build does not use yet."
                )
            root_needed = src.fs_size
        else:
            if given is None and not src.content.kernels:
                raise BuildError("Nothing to boot: no /boot/vmlinuz-* in the source and no --kernel given.")
            if given is not None:
                for extra in (given.kernel, given.initrd):
                    if extra is not None:
                        src.content.add("file", extra.stat().st_size)
            root_needed = root_bytes_needed(src.content)

        disk_size = round_up_mib(size) if size is not None else default_disk_size(root_needed, shape)
        if disk_size > limits.max_virtual_size:
            raise BuildError(
                f"The disk would be {format_size(disk_size)}, more than the "
                f"{format_size(limits.max_virtual_size)} imagewright builds; nothing was written."
            )
        try:
            layout = plan_layout(disk_size, shape)
        except BuildError:
            needed = minimum_disk_size(root_needed, shape)
            raise BuildError(
                f"A {format_size(disk_size)} disk leaves too little room for the root filesystem"
                f"{_beside_root(shape)}; give --size {format_size(needed)} or more."
            ) from None
        if not isinstance(src, FilesystemImageSource):
            check_tree_fits(src.content, layout.root.size, disk_size=disk_size, shape=shape)

        work = out.scratch_directory("work")
        loader: EfiLoader | None = None
        loader_notes: list[str] = []
        # The guest's own chain is read from the root filesystem once it is written (step 4).
        from_guest = efi_loader != "unsigned" and (
            isinstance(src, FilesystemImageSource) or src.content.has_uefi_chain
        )
        if shape.uefi and not from_guest:
            loader, loader_notes = choose_loader(efi_loader, scratch=work, cache_dir=cache_dir)
            check_esp_room(shape.esp_size, loader)
        report = _build_raw(
            src, out.path, work, layout, given=given, fs_type=fs_type or "ext4", append=append,
            loader=loader, efi_loader=efi_loader, cache_dir=cache_dir, scratch=out.scratch,
            limits=limits, progress=progress,
        )  # fmt: skip
        report.notes[:0] = shape_notes + loader_notes
        _check_built(out.path, layout, report, work)
        if finish is not None:
            finish(out.path)
        if plan.format == "raw" and plan.compression is None:
            out.commit()
        else:
            from imagewright.ops.convert import convert

            convert(
                out.path, out_path, output_format=plan.format, subformat=plan.subformat,
                compression=plan.compression, checksums=(), force=force, limits=limits,
                progress=progress,
            )  # fmt: skip
    report.output = str(out_path)
    report.output_format = plan.format
    report.output_compression = plan.compression
    report.seconds = time.monotonic() - started
    return report


def _beside_root(shape: LayoutShape) -> str:
    beside = [f"a {format_size(shape.esp_size)} EFI System Partition"] if shape.uefi else []
    if shape.swap_size:
        beside.append(f"{format_size(round_up_mib(shape.swap_size))} of swap")
    return f" next to {' and '.join(beside)}" if beside else ""


def _build_raw(
    src: BuildSource,
    image: Path,
    work: Path,
    layout: DiskLayout,
    *,
    given: GivenKernel | None,
    fs_type: str,
    append: str,
    loader: EfiLoader | None,
    efi_loader: LoaderChoice,
    cache_dir: Path | None,
    scratch: Callable[[str], Path],
    limits: Limits,
    progress: Progress | None,
) -> BuildReport:
    """Steps 2-5 of the module docstring, into the raw file ``image``; ``loader`` None on a
    disk with an ESP: the guest's own chain, else ``choose_loader(efi_loader)``."""
    notes: list[str] = []
    fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)  # created empty by AtomicOutput
    try:
        try:
            os.ftruncate(fd, layout.disk_size)
        except OSError as err:
            # EFBIG: a disk larger than the output's filesystem can hold as one file.
            raise BuildError(
                f"A {format_size(layout.disk_size)} disk cannot be created next to the output "
                f"({err.strerror}); nothing was written."
            ) from None
        sfdisk.write_table(image, layout.sfdisk_script())
        # Read back with our own parser: the check and the report's ids come from one read.
        with FileSource(image) as disk:
            written = read_partition_table(disk)
        check_table(layout, written)
        assert written is not None  # check_table refuses a missing table

        root_part = layout.root
        if isinstance(src, FilesystemImageSource):
            root = write_filesystem_image(
                image, fd, root_part, src, scratch=scratch, disk_size=layout.disk_size,
                shape=layout.shape, limits=limits, progress=progress,
            )  # fmt: skip
            source_format: str | None = (
                src.format if src.compression is None else f"{src.format} in {src.compression}"
            )
        else:
            root_uuid = str(uuid_module.uuid4())
            if isinstance(src, DirectorySource):
                plan = directory_plan(src.path)
                if os.getuid() != 0:
                    notes.append(
                        f"files of the directory owned by uid {os.getuid()} (and group {os.getgid()}) "
                        "are owned by root (0:0) in the image"
                    )
                root = write_tree(
                    image, root_part, src.path, plan, fs_type=fs_type, uuid=root_uuid, scratch=work
                )
                source_format = None
            else:
                root = _write_tarball(image, root_part, src, work, fs_type, root_uuid, progress)
                source_format = src.compression or "tar"

        if os.fstat(fd).st_size != layout.disk_size:
            raise BuildError("A program changed the size of the image while the root filesystem was written.")
        swap_part = layout.swap
        swap_uuid = str(uuid_module.uuid4()) if swap_part is not None else None
        guest = E2fsGuest(
            image, offset=root_part.offset, writable=True, fs_type=root.fs_type,
            description="the new root filesystem", verify=False,
        )  # fmt: skip
        try:
            if layout.esp is not None and loader is None:
                loader = _loader_from_guest(guest, efi_loader, work, cache_dir, notes)
            chosen = install_kernel(guest, given)
            write_grub_config(guest, chosen, root.uuid, append)
            write_fstab(guest, root_uuid=root.uuid, root_type=root.fs_type, swap_uuid=swap_uuid)
            menu = menu_program(guest)
            kernel_hooks: list[str] = []
            if menu is None:
                kernel_hooks = install_kernel_hook(guest, root.uuid, append)
                notes.append(
                    "the guest has no boot loader package (no update-grub or grub-mkconfig): "
                    f"{kernel_hooks[0]} rewrites /boot/grub/grub.cfg when a kernel is installed"
                )
            guest.flush()
        finally:
            guest.discard()
        if swap_part is not None and swap_uuid is not None:
            write_swap(fd, swap_part, swap_uuid, work / "swap")
    finally:
        os.close(fd)
    placement = install_grub_bios(image, layout, root.uuid, work) if layout.shape.bios else None
    esp: EspPlacement | None = None
    if layout.esp is not None:
        assert loader is not None
        esp = write_esp(image, layout.esp, loader, root.uuid, work)
    return BuildReport(
        source=str(src.path),
        source_kind=src.kind,
        source_format=source_format,
        output="",
        output_format="raw",
        output_compression=None,
        disk_size=layout.disk_size,
        table=layout.table,
        disk_id=written.disk_id,
        partitions=_partition_reports(layout, written, root, swap_uuid, esp),
        root=root,
        swap_uuid=swap_uuid,
        bootloader=placement,
        kernel=chosen,
        kernel_command_line=command_line(root.uuid, append),
        seconds=0.0,
        notes=notes,
        firmware=layout.firmware,
        esp=esp,
        boot_loader_package_program=menu,
        kernel_hooks=kernel_hooks,
    )


def _loader_from_guest(
    guest: E2fsGuest, efi_loader: LoaderChoice, work: Path, cache_dir: Path | None, notes: list[str]
) -> EfiLoader:
    """The guest's own signed chain, said in the notes; else what ``efi_loader`` chooses."""
    loader, why_not = guest_loader(guest, work)
    if loader is not None:
        grub_signers = loader.binary("grubx64.efi").signers
        signed_by = f" (GRUB's signature names {', '.join(grub_signers[:2])})" if grub_signers else ""
        notes.append(
            f"the ESP holds {loader.description}, copied from its root filesystem: they start the "
            f"kernel its distribution signed, with Secure Boot on or off{signed_by}"
        )
        return loader
    loader, loader_notes = choose_loader(efi_loader, scratch=work, cache_dir=cache_dir)
    if why_not is not None:
        notes.append(f"the guest's own signed UEFI chain was not used: {why_not}")
    notes.extend(loader_notes)
    return loader


def _write_tarball(
    image: Path,
    part: PlannedPartition,
    src: TarballSource,
    work: Path,
    fs_type: str,
    root_uuid: str,
    progress: Progress | None,
) -> RootFilesystem:
    def extracting(done: int, total: int) -> None:
        if progress is not None:
            progress("extracting", done, total)

    # The staging tree is read once by mke2fs and deleted: on tmpfs when memory allows
    # (files.memory_scratch_directory says why), else beside the output.
    memory = memory_scratch_directory(root_bytes_needed(src.content))
    with ScratchFiles(image, memory) if memory is not None else contextlib.nullcontext() as in_memory:
        if in_memory is not None:
            staging = in_memory.scratch_directory("tree")
        else:
            staging = work / "tree"
            staging.mkdir(mode=0o700)
        try:
            tree = extract_tarball(src, staging, progress=extracting)
            return write_tree(image, part, staging, tree.plan, fs_type=fs_type, uuid=root_uuid, scratch=work)
        finally:
            # The staging tree is as large as the content: free it before the next steps.
            shutil.rmtree(staging, ignore_errors=True)


def _partition_reports(
    layout: DiskLayout,
    written: PartitionTable,
    root: RootFilesystem,
    swap_uuid: str | None,
    esp: EspPlacement | None,
) -> list[PartitionReport]:
    by_number = {p.number: p for p in written.partitions}
    reports: list[PartitionReport] = []
    for part in layout.partitions:
        entry = by_number.get(part.number)
        part_uuid = entry.uuid if entry is not None and entry.uuid else None
        if part_uuid is None and layout.table == "mbr" and written.disk_id.startswith("0x"):
            part_uuid = f"{written.disk_id[2:]}-{part.number:02d}"
        report = PartitionReport(
            number=part.number,
            role=part.role,
            start=part.start,
            sectors=part.sectors,
            size=part.size,
            type=part.type_id,
            partition_uuid=part_uuid.lower() if part_uuid else None,
            name=part.name,
            bootable=part.bootable,
        )
        if part.role == "esp" and esp is not None:
            report.filesystem, report.filesystem_uuid, report.label = "vfat", esp.volume_id, ESP_LABEL
        elif part.role == "root":
            report.filesystem, report.filesystem_uuid, report.label = root.fs_type, root.uuid, root.label
        elif part.role == "swap":
            report.filesystem, report.filesystem_uuid, report.label = "swap", swap_uuid, "swap"
        reports.append(report)
    return reports


def _check_built(image: Path, layout: DiskLayout, built: BuildReport, work: Path) -> None:
    """Step 6: the filesystems are clean, and inspect sees what was built and how it boots."""
    root = built.root
    result = e2fs.e2fsck_check(e2fs.device_name(image, layout.root.offset))
    if not result.clean:
        raise BuildError(f"e2fsck finds the new root filesystem damaged: {result.first_problem()}.")
    if layout.esp is not None and built.esp is not None:
        check_esp(image, layout.esp, built.esp, work)
    report = inspect_image(image)
    disk = report.disk
    table = disk.partition_table if disk is not None else None
    if disk is None or table is None or not report.safe:
        raise BuildError("inspect does not see a sound partition table on the built disk.")
    parts = {p.number: p for p in table.partitions}
    root_part = parts.get(layout.root.number)
    root_fs = root_part.filesystem if root_part is not None else None
    if root_fs is None or root_fs.type != root.fs_type or (root_fs.uuid or "").lower() != root.uuid.lower():
        raise BuildError("inspect does not find the new root filesystem where it was written.")
    if layout.swap is not None:
        swap_part = parts.get(layout.swap.number)
        swap_fs = swap_part.filesystem if swap_part is not None else None
        if swap_fs is None or swap_fs.type != "swap":
            raise BuildError("inspect does not find the swap signature in the swap partition.")
    boot = disk.boot
    if boot is None:
        raise BuildError("inspect finds no boot sector on the built disk.")
    if layout.shape.bios and boot.code.kind != "grub2":
        raise BuildError("inspect does not recognise GRUB 2's boot code in the built disk's MBR.")
    if layout.esp is not None and built.esp is not None:
        first = [f for f in boot.efi_files if f.removable_media_path and f.partition == layout.esp.number]
        expected = "shim" if built.esp.secure_boot else "grub"
        if not first or first[0].loader != expected or first[0].architecture != "x86_64":
            raise BuildError(
                f"inspect does not find {expected} at EFI/BOOT/BOOTX64.EFI on the new EFI System Partition."
            )
    if boot.boots_under != built.boots_under:
        raise BuildError(
            f"inspect says the built disk boots under {boot.firmware_description}, "
            f"not under {' and '.join(built.boots_under)} as built."
        )
