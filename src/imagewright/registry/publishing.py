"""``imagewright publish --to …,registry --cloud NAME``: the files of one read, then the registry.

``package.publish`` makes the files (one read of the source); before any of them is put in
place it hands them over (``hand_over``), and this module uploads, through ``upload_image``
(the local gate, the md5 and sha512 the registry then reports checked against the bytes sent):

- the disk image: the ``qcow2`` of this publish, else its ``raw``, else its ``vmdk`` — the
  first of those ``--to`` names; when it names none, a qcow2 is made for the upload alone (a
  scratch file of the same pass, not kept, not in ``SHA256SUMS``). Its properties carry the
  EC2 links, ``kernel_id`` / ``ramdisk_id`` (``--kernel`` / ``--ramdisk``: an ``aki-…`` /
  ``ari-…`` id, a registry id or a name; ``registry.ec2.link_properties``), resolved before the
  source is read so a wrong link costs nothing; a bundle of the same publish names them by
  their EC2 ids;
- the OVA, when ``--to`` names it: its own image (``container_format=ova``, named
  ``NAME.ova``), which the registry verifies as a package.

An EC2 bundle is not uploaded to an image registry (it goes to an S3 bucket for
``euca-register``; ``imagewright image register-bundle`` registers one). A failed upload deletes
the images this publish created and fails the publish before any file is put in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imagewright.errors import ImagewrightError, InvalidArgumentError
from imagewright.metadata.imds import ec2_image_id
from imagewright.package.bundle import BundleOptions
from imagewright.package.publish import FinishedFile, PublishResult, publish
from imagewright.registry.client import Cloud, UploadResult, delete_image, upload_image
from imagewright.registry.ec2 import link_properties

REGISTRY = "registry"
#: Which file is the registry's disk image, first found first.
DISK_TARGETS = ("qcow2", "raw", "vmdk")


@dataclass
class RegistryPublishResult:
    published: PublishResult
    uploads: list[UploadResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.published.to_dict(), "registry": [asdict(upload) for upload in self.uploads]}


def publish_to_registry(
    cloud: Cloud,
    image: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    targets: tuple[str, ...],
    *,
    name: str,
    kernel: str | None = None,
    ramdisk: str | None = None,
    visibility: str | None = None,
    properties: dict[str, str] | None = None,
    **publish_options: Any,
) -> RegistryPublishResult:
    """Publish ``image`` to ``targets`` (without ``registry``) and upload as the docstring says."""
    files = tuple(target for target in targets if target != REGISTRY)
    disk = next((target for target in files if target in DISK_TARGETS), None)
    if kernel == "true" or ramdisk == "true":
        raise InvalidArgumentError(
            "--kernel/--ramdisk true bundle a kernel or ramdisk; the registry target links a machine "
            "image to them (give their aki-/ari- ids, ids or names), register a kernel with "
            "'imagewright image register-bundle'."
        )
    links = link_properties(cloud, kernel=kernel, ramdisk=ramdisk)
    bundle = publish_options.get("bundle")
    if isinstance(bundle, BundleOptions) and links:
        # The bundle's manifest names the same images, the EC2 way (an id or a name becomes aki-…).
        publish_options["bundle"] = dataclasses.replace(
            bundle,
            kernel=ec2_image_id(links["kernel_id"], "aki") if "kernel_id" in links else bundle.kernel,
            ramdisk=ec2_image_id(links["ramdisk_id"], "ari") if "ramdisk_id" in links else bundle.ramdisk,
        )
    uploads: list[UploadResult] = []

    def hand_over(finished: list[FinishedFile]) -> None:
        by_target = {item.file.target: item for item in finished}
        disk_file = by_target[disk or "qcow2"]
        try:
            uploads.append(
                upload_image(
                    cloud,
                    disk_file.location,
                    name=name,
                    visibility=visibility,
                    properties={**(properties or {}), **links},
                )
            )
            if "ova" in by_target:
                uploads.append(
                    upload_image(
                        cloud,
                        by_target["ova"].location,
                        name=f"{name}.ova",
                        visibility=visibility,
                        properties=dict(properties or {}),
                        container_format="ova",
                    )
                )
        except BaseException:
            for made in uploads:
                with contextlib.suppress(ImagewrightError):
                    delete_image(cloud, made.id)
            raise
        for upload in uploads:
            # upload_image names the temporary file it sent; say which published file it is.
            upload.file = next(
                (
                    item.file.path
                    for item in finished
                    if str(item.location) == upload.file and not item.unpublished
                ),
                f"{Path(upload.file).name} (made for the upload)",
            )

    published = publish(
        Path(image),
        Path(directory),
        files,
        name=name,
        hand_over=hand_over,
        unpublished=() if disk is not None else ("qcow2",),
        **publish_options,
    )
    return RegistryPublishResult(published, uploads)
