"""EC2 image triplets in a Glance registry: a bundle registered as euca-register does it, and the
kernel/ramdisk links kept as Glance keeps them.

A machine image (EMI/AMI) booted with its own kernel (EKI/AKI) and ramdisk (ERI/ARI) is, in
Glance, three images: the kernel ``disk_format=aki, container_format=aki``, the ramdisk
``ari``/``ari``, and the machine image carrying the properties ``kernel_id`` and ``ramdisk_id``
— the *Glance ids* (UUIDs) of the other two (Glance's image schema; nova's direct kernel boot
reads them). A bundle manifest names them the EC2 way (``<kernel_id>aki-…</kernel_id>``), so
``linked_image`` maps such an id to the registry image it stands for: an EC2 id of a registry
image is its type prefix and the first hex digits of its UUID (``metadata.imds.ec2_image_id``,
the one mapping the metadata service uses too; eight digits, the old EC2 length, are accepted
as a prefix), a UUID is itself, anything else is a name only one image has. The linked image
must be active and of the right kind (a kernel must be ``aki``): a machine image pointing at
a qcow2 "kernel" would not boot, and the link is refused with one sentence instead.

``register_bundle`` is ``euca-register`` after ``euca-upload-bundle`` in one step, from the
bundle's directory: ``package.bundle.unbundle`` checks the manifest's signature, every part and
the image digest before writing the image to a scratch directory (nothing is sent otherwise);
the image is uploaded as ``ami``/``aki``/``ari`` (the manifest's type) with its links resolved
first, through ``upload_image`` (the local gate, the checksums the registry reports).

Sources: the Image API v2 image schema (``kernel_id``, ``ramdisk_id``: "ID of image stored in
Glance that should be used as the kernel/ramdisk when booting an AMI-style image"); euca2ools
``euca-register`` / nova's S3 image service (image type → ``ami``/``aki``/``ari`` formats).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from imagewright.errors import CloudError
from imagewright.files import io_error
from imagewright.metadata.imds import ec2_image_id
from imagewright.registry.client import (
    ByteProgress,
    Cloud,
    UploadResult,
    find_image,
    list_images,
    upload_image,
)

#: Bundle image type → Glance's disk_format and container_format.
GLANCE_FORMAT = {"machine": "ami", "kernel": "aki", "ramdisk": "ari"}
#: The property that links each kind, and the format the linked image must have.
LINKS = {"kernel": ("kernel_id", "aki"), "ramdisk": ("ramdisk_id", "ari")}
_EC2_ID = re.compile(r"^(aki|ari|eki|eri)-([0-9a-f]{8,17})$")


def linked_image(cloud: Cloud, ref: str, kind: str) -> dict[str, Any]:
    """The active ``aki`` (kind ``kernel``) or ``ari`` (``ramdisk``) image ``ref`` stands for."""
    prefix = LINKS[kind][1]
    match = _EC2_ID.match(ref.lower())
    if match is not None:
        digits = match.group(2)
        found = [
            image
            for image in list_images(cloud, properties={"disk_format": prefix})
            if ec2_image_id(image["id"], prefix).split("-", 1)[1].startswith(digits)
        ]
        if not found:
            raise CloudError(f"The {kind} {ref} is not an {prefix} image in {cloud.name}.")
        if len(found) > 1:
            raise CloudError(f"{len(found)} {prefix} images of {cloud.name} match {ref}; use the image's id.")
        image = found[0]
    else:
        image = find_image(cloud, ref)
    if image.get("disk_format") != prefix:
        raise CloudError(
            f"The {kind} {ref} is the {image.get('disk_format')} image {image['id']}, not an {prefix} image."
        )
    if image.get("status") != "active":
        raise CloudError(f"The {kind} {ref} ({image['id']}) is {image.get('status')}, not active.")
    return image


def link_properties(cloud: Cloud, *, kernel: str | None, ramdisk: str | None) -> dict[str, str]:
    """``kernel_id`` / ``ramdisk_id`` (Glance ids) for the EC2 ids, ids or names given."""
    properties: dict[str, str] = {}
    for kind, ref in (("kernel", kernel), ("ramdisk", ramdisk)):
        if ref:
            properties[LINKS[kind][0]] = str(linked_image(cloud, ref, kind)["id"])
    return properties


def register_bundle(
    cloud: Cloud,
    manifest: str | os.PathLike[str],
    private_key: Path,
    *,
    name: str | None = None,
    certificate: Path | None = None,
    visibility: str | None = None,
    properties: dict[str, str] | None = None,
    scratch_dir: str | os.PathLike[str] | None = None,
    progress: ByteProgress | None = None,
) -> UploadResult:
    """Verify and unbundle the bundle ``manifest`` (its parts beside it), then upload its image
    with Glance's EC2 formats and its kernel/ramdisk links (see the module docstring)."""
    from imagewright.package.bundle import unbundle
    from imagewright.package.bundle_manifest import MAX_MANIFEST_BYTES, read_manifest

    manifest_path = Path(manifest)
    try:
        with manifest_path.open("rb") as handle:
            text = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise io_error(err, manifest_path, "reading") from None
    # The links first (the manifest as it stands; unbundle then checks its signature, which
    # covers them): a bundle whose kernel is not in the registry is refused before any work.
    said = read_manifest(text).manifest
    links = link_properties(cloud, kernel=said.kernel_id, ramdisk=said.ramdisk_id)
    glance_format = GLANCE_FORMAT[said.image_type]
    with tempfile.TemporaryDirectory(prefix="iw-bundle-", dir=scratch_dir) as scratch:
        unbundled = unbundle(manifest_path, scratch, private_key, certificate=certificate)
        result = upload_image(
            cloud,
            unbundled.image,
            name=name or said.name,
            visibility=visibility,
            properties={**(properties or {}), "architecture": said.architecture, **links},
            disk_format=glance_format,
            container_format=glance_format,
            scratch_dir=scratch_dir,
            progress=progress,
        )
    result.file = str(manifest_path)
    return result
