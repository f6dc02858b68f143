"""What a filesystem (or other signature) probe reports, in blkid's vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FilesystemInfo:
    """One recognised signature, spelled the way ``blkid -p -o export`` spells it.

    ``type``, ``label``, ``uuid`` and ``version`` are blkid's TYPE, LABEL, UUID and VERSION;
    ``block_size`` is blkid's BLOCK_SIZE; ``size_bytes`` is the size the superblock claims
    (``None`` where the format does not say). ``details`` holds what else a reader may want
    (feature lists, secondary labels, FAT type ...), JSON-serialisable. ``problems`` are
    oddities found while probing (a checksum that does not match, an ambivalent result);
    they describe the filesystem, they do not by themselves make the image dangerous.
    """

    type: str
    label: str | None = None
    uuid: str | None = None
    version: str | None = None
    block_size: int | None = None
    size_bytes: int | None = None
    #: blkid's USAGE: "filesystem", "other" (swap, journals), "crypto" or "raid".
    usage: str = "filesystem"
    #: Byte offset of the probed region inside the source that was given to probe_filesystem.
    offset: int = 0
    details: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
