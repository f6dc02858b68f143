"""Context media: what a cloud hands a new instance so it can configure itself.

One builder per kind, behind the ``ContextMediumBuilder`` interface (``builder.py``), found by
name in ``BUILDERS``:

============  ==========  =========  ==========================================
kind          label       medium     read by
============  ==========  =========  ==========================================
nocloud       cidata      ISO 9660   cloud-init NoCloud, our agent
configdrive   config-2    ISO 9660   cloud-init ConfigDrive, our agent
opennebula    CONTEXT     ISO 9660   one-context, cloud-init OpenNebula, our agent
wakame        METADATA    FAT disk   wakame-init, our agent
============  ==========  =========  ==========================================

Where an agent finds each value (details in each builder's docstring):

- nocloud (``cidata``): instance id = meta-data ``instance-id``; hostname = meta-data
  ``local-hostname``; keys = meta-data ``public-keys`` list; network = ``network-config``
  (absent = DHCP); user-data = ``user-data`` (always present, generated ``#cloud-config``
  when none was given).
- configdrive (``config-2``): ``openstack/latest/meta_data.json`` ``uuid``, ``hostname``,
  ``public_keys``; ``network_data.json`` (``ipv4`` or ``ipv4_dhcp``); ``user_data`` if given.
- opennebula (``CONTEXT``): ``context.sh`` ``INSTANCE_ID`` (``VMID`` only when all digits),
  ``SET_HOSTNAME``/``HOSTNAME``, ``SSH_PUBLIC_KEY`` (one key per line), ``ETH0_*`` (no
  ``ETH0_IP`` = DHCP), ``START_SCRIPT_BASE64``; ``init.sh`` when ``INIT_SCRIPTS`` is set.
- wakame (``METADATA`` FAT disk): ``meta-data/instance-id``, ``meta-data/local-hostname``,
  ``meta-data/public-keys/N/openssh-key``, ``meta-data/network/interfaces/macs/<mac with ->/``
  (no ``local-ipv4s`` = DHCP), ``meta-data/extra-hosts/<name>``, ``user-data`` if given; each
  value file ends with one newline, user-data is exact.

``build_context_medium`` asks the builder for the file tree, writes it with the matching
writer (``iso.write_iso9660`` or ``fat.write_fat_image``) to a temporary name beside the
output, and only then moves it into place (``files.AtomicOutput``): a failure leaves no partial
file, and an existing output is refused unless ``force`` is set. Media are written mode 0600:
user-data often carries secrets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagewright.errors import ContextError, InvalidArgumentError
from imagewright.files import AtomicOutput
from imagewright.metadata.builder import ContextMediumBuilder
from imagewright.metadata.configdrive import ConfigDriveBuilder
from imagewright.metadata.fat import write_fat_image
from imagewright.metadata.instance import InstanceDescription
from imagewright.metadata.iso import write_iso9660
from imagewright.metadata.layout import MediumLayout
from imagewright.metadata.nocloud import NoCloudBuilder
from imagewright.metadata.opennebula import OpenNebulaBuilder
from imagewright.metadata.wakame import WakameBuilder

BUILDERS: dict[str, ContextMediumBuilder] = {
    builder.kind: builder
    for builder in (NoCloudBuilder(), ConfigDriveBuilder(), OpenNebulaBuilder(), WakameBuilder())
}

CONTEXT_KINDS: tuple[str, ...] = tuple(BUILDERS)

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ContextMediumReport:
    """What was written: enough for a user to check it and for a test to assert on it."""

    kind: str
    description: str
    label: str
    filesystem: str
    path: Path
    files: tuple[str, ...]
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "label": self.label,
            "filesystem": self.filesystem,
            "path": str(self.path),
            "files": list(self.files),
            "size": self.size,
            "sha256": self.sha256,
        }


def builder_for(kind: str) -> ContextMediumBuilder:
    try:
        return BUILDERS[kind]
    except KeyError:
        known = ", ".join(CONTEXT_KINDS)
        raise InvalidArgumentError(
            f"'{kind}' is not a kind of context medium; choose one of {known}."
        ) from None


def context_layout(kind: str, instance: InstanceDescription) -> MediumLayout:
    """The file tree a medium of ``kind`` would hold for ``instance`` (nothing is written)."""
    return builder_for(kind).layout(instance)


def write_layout(layout: MediumLayout, destination: Path) -> None:
    """Write ``layout`` to ``destination`` (overwriting it) with the writer its filesystem needs."""
    if layout.filesystem == "iso9660":
        write_iso9660(layout, destination)
    elif layout.filesystem == "vfat":
        write_fat_image(layout, destination)
    else:  # pragma: no cover - Filesystem is a closed Literal
        raise ContextError(f"No writer for {layout.filesystem} media.")


def build_context_medium(
    kind: str, instance: InstanceDescription, output: Path, *, force: bool = False
) -> ContextMediumReport:
    """Build the ``kind`` medium for ``instance`` at ``output``, atomically."""
    builder = builder_for(kind)
    layout = builder.layout(instance)
    with AtomicOutput(output, force=force, mode=0o600) as out:
        write_layout(layout, out.path)
        out.commit()
    size, digest = _size_and_sha256(output)
    return ContextMediumReport(
        kind=builder.kind,
        description=builder.description,
        label=layout.label,
        filesystem=layout.filesystem,
        path=output,
        files=tuple(layout.file_paths),
        size=size,
        sha256=digest,
    )


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
