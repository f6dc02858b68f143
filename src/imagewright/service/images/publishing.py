"""What the registry learns from an image's content on the way to ``active``, and the rule that
keeps an image with secrets in it from being published.

Every path by which bytes become an active image's data passes here after the safety gate
admitted them and before the image turns ``active``: ``PUT /file`` (``upload``) and the
glance-direct, web-download and glance-download imports (``service.tasks.importing``);
copy-image copies an active image's bytes, whose properties were filled when they arrived.

1. ``content_facts``: the properties ``ops.inspect_os.properties.image_facts`` reads from the
   image — ``os_distro``, ``os_version``, ``architecture``, ``os_type``, the firmware properties
   of a UEFI-only disk, and the audit's summary ``imagewright_audit``. The guest is read where
   the blob lies when the store is a directory of files; a blob in another store (S3) is first
   copied into the registry's scratch directory, since the guest readers (debugfs, libguestfs)
   need a local file. Compressed containers, OVA packages, ISOs and kernels are not looked into.
2. ``apply_facts`` (in the transaction that activates the image): a property its owner set is
   never overridden; ``imagewright_audit`` is the registry's own (clients may not write it, see
   ``schemas.REGISTRY_PROPERTIES``), so a client cannot make an audit say "clean".
3. ``require_publishable``: an image whose audit found secrets (the audit's "secret" class: SSH
   host keys, authorized_keys and private keys, shell histories, password hashes, account-file
   backups) is not made ``public`` or ``community`` — by a PATCH, or by data arriving for an
   image created public — unless the image carries ``imagewright_allow_secrets=true``. The
   override is a property rather than a request header so that it is explicit, set by whoever
   may change the image (its owner's members, or an admin), and stays visible on the image for
   everyone who later wonders why a published image holds keys; removing it does not unpublish.
   An image that could not be audited (no Linux root, a filesystem without a reader here) is
   not refused: the rule catches what imagewright can see, it does not promise what it cannot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from imagewright.catalog import images
from imagewright.catalog.models import Image
from imagewright.errors import ConflictError
from imagewright.files import ScratchFiles
from imagewright.inspection import ImageReport
from imagewright.ops.inspect_os.properties import (
    ALLOW_SECRETS_PROPERTY,
    AUDIT_PROPERTY,
    ImageFacts,
    audit_secrets,
    image_facts,
)
from imagewright.stores import BlobStore
from imagewright.stores.file import FileStore

LOG = logging.getLogger("imagewright.service.publishing")

#: Visibilities that show an image to every project.
PUBLISHED = ("public", "community")
#: Container and disk formats whose content is looked into (a bare disk or filesystem image).
_LOOKED_INTO_CONTAINERS = ("bare",)
_NOT_LOOKED_INTO_DISKS = ("iso", "aki", "ari")
#: The properties the registry writes whatever the image had (no client may write them).
OURS = frozenset({AUDIT_PROPERTY})


def looked_into(disk_format: str, container_format: str) -> bool:
    return container_format in _LOOKED_INTO_CONTAINERS and disk_format not in _NOT_LOOKED_INTO_DISKS


def content_facts(path: Path, report: ImageReport, disk_format: str, container_format: str) -> ImageFacts:
    """The properties of the image at ``path`` (a local file the gate admitted)."""
    if not looked_into(disk_format, container_format):
        return ImageFacts()
    facts = image_facts(path, report)
    for note in facts.notes:
        LOG.info("inspecting %s: %s", report.path, note)
    return facts


def blob_facts(
    store: BlobStore,
    location: str,
    report: ImageReport,
    disk_format: str,
    container_format: str,
    scratch_root: Path,
) -> ImageFacts:
    """``content_facts`` of a stored blob: where it lies (a file store), else from a local copy."""
    if not looked_into(disk_format, container_format):
        return ImageFacts()
    if isinstance(store, FileStore):
        return content_facts(store.path_for(store.key_of(location)), report, disk_format, container_format)
    scratch_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with ScratchFiles(scratch_root / "inspect", scratch_root) as scratch:
        copy = scratch.scratch("blob")
        with open(copy, "wb") as out:
            for chunk in store.read_chunks(location):
                out.write(chunk)
        return content_facts(copy, report, disk_format, container_format)


def apply_facts(image: Image, facts: ImageFacts, *, limit: int) -> list[str]:
    """Fill in ``facts`` on a loaded image (the owner's values win); the names written."""
    return images.fill_properties(image, facts.properties, ours=OURS, limit=limit)


def allows_secrets(properties: Mapping[str, str]) -> bool:
    return properties.get(ALLOW_SECRETS_PROPERTY, "").strip().lower() == "true"


def require_publishable(image_id: str, visibility: str | None, properties: Mapping[str, str]) -> None:
    """ConflictError (409) when an image whose audit found secrets would become visible to all."""
    if visibility not in PUBLISHED:
        return
    secrets = audit_secrets(properties.get(AUDIT_PROPERTY))
    if not secrets or allows_secrets(properties):
        return
    raise ConflictError(
        f"Image {image_id} cannot be made {visibility}: imagewright's audit found secrets in its data "
        f"({', '.join(secrets)}); remove them with 'imagewright prepare' and upload the image again, or "
        f"set the property {ALLOW_SECRETS_PROPERTY}=true to publish it anyway."
    )


def property_dict(image: Image) -> dict[str, str]:
    return {prop.name: prop.value for prop in image.properties}
