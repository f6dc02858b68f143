"""Guests for the boot-tuning tests of ``publish``: a Debian-shaped root (update-grub's grub.cfg,
/etc/default/grub, cloud-init, systemd-networkd-wait-online) on a GPT disk, the same disk
tuned by ``prepare`` as the reference, and how an output is read back (raw, then debugfs)."""

from __future__ import annotations

import gzip
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.tools import qemu_img
from tests.guest.images import GuestImage, cat, debugfs, partitioned_ext4, write
from tests.ops.test_prepare_boot_tuning import (
    BOOT_TUNING_CHANGES,
    DEBIAN_GRUB_CFG,
    DEBIAN_GRUB_DEFAULTS,
    WAIT_ONLINE,
)

from imagewright.ops.prepare import PrepareOptions, prepare
from imagewright.ops.prepare.model import ANY_DATASOURCE

#: What boot-tuning writes on the Debian-shaped root (action by path), prepare's report.
TUNED = BOOT_TUNING_CHANGES
#: The files whose content the tuning sets (the link is checked by its target).
TUNED_FILES = (
    "/boot/grub/grub.cfg",
    "/etc/default/grub",
    "/etc/cloud/cloud.cfg.d/99_imagewright_datasource.cfg",
    "/etc/cloud/cloud.cfg.d/99_imagewright_ssh_keys.cfg",
)


@dataclass(frozen=True)
class DebianShaped:
    raw: Path
    qcow2: Path
    gz: Path
    #: The qcow2 tuned by ``prepare --boot-tuning --datasource nocloud,configdrive,ec2`` (raw).
    reference: GuestImage
    #: Where the root filesystem starts on the disk (bytes).
    root_offset: int


def debian_shaped(directory: Path) -> DebianShaped:
    root = directory / "tree"
    write(root, "etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    write(root, "boot/grub/grub.cfg", DEBIAN_GRUB_CFG)
    write(root, "etc/default/grub", DEBIAN_GRUB_DEFAULTS)
    write(root, "etc/cloud/cloud.cfg.d/90_dpkg.cfg", "datasource_list: [ NoCloud, Ec2, None ]\n")
    write(root, WAIT_ONLINE, "[Unit]\nDescription=Wait for Network to be Configured\n")
    image = partitioned_ext4(root, directory / "debian.raw", table="gpt")
    qcow2 = directory / "debian.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", image.path, qcow2)
    gz = directory / "debian.raw.gz"
    with image.path.open("rb") as fin, gzip.open(gz, "wb", compresslevel=1) as fout:
        shutil.copyfileobj(fin, fout)
    reference = directory / "reference.raw"
    shutil.copyfile(image.path, reference)
    options = PrepareOptions(boot_tuning=True, boot_datasource=ANY_DATASOURCE)
    prepare(reference, operations=["boot-tuning"], options=options)
    return DebianShaped(image.path, qcow2, gz, GuestImage(reference, image.offset), image.offset)


def output_as_raw(path: Path, work: Path) -> Path:
    """An output of publish as a raw disk, read by programs that are not imagewright's."""
    raw = work / f"{path.name}.as.raw"
    name = path.name
    if name.endswith(".raw.gz"):
        with gzip.open(path, "rb") as fin, raw.open("wb") as fout:
            shutil.copyfileobj(fin, fout)
    elif name.endswith(".ova"):
        with tarfile.open(path) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith(".vmdk"))
            extracted = work / f"{path.name}.vmdk"
            source = archive.extractfile(member)
            assert source is not None
            extracted.write_bytes(source.read())
        qemu_img("convert", "-f", "vmdk", "-O", "raw", extracted, raw)
    elif name.endswith(".raw"):
        return path
    else:
        fmt = "vmdk" if name.endswith(".vmdk") else "qcow2"
        qemu_img("convert", "-f", fmt, "-O", "raw", path, raw)
    return raw


def tuned_files(image: GuestImage) -> dict[str, bytes]:
    """The tuned files' content, and the mask link's target, as debugfs reads them."""
    found = {path: cat(image, path) for path in TUNED_FILES}
    link = debugfs(image, "stat /etc/systemd/system/systemd-networkd-wait-online.service")
    found["wait-online"] = link.split('Fast link dest: "', 1)[-1].split('"', 1)[0].encode()
    return found
