"""A whole-image LUKS1 volume, as QEMU's "luks" block driver sees it.

Sources: QEMU 7.2 ``crypto/block-luks.c`` (``qcrypto_block_luks_has_format``,
``qcrypto_block_luks_load_header``) and ``block/crypto.c`` (``block_crypto_co_getlength``:
the virtual size is the file size minus the payload offset); the LUKS1 on-disk format
specification 1.2.3. All integers are big-endian. Header (592 bytes)::

      0 magic 'LUKS\\xba\\xbe'   6 version u16 (1)   8 cipher name (32)   40 cipher mode (32)
     72 hash spec (32)   104 payload offset (sectors)   108 key bytes   112 master key digest (20)
    132 digest salt (32)   164 digest iterations   168 UUID (40, text)
    208 8 key slots of 48 bytes: active (0x00AC71F3 enabled, 0x0000DEAD disabled), iterations,
        salt (32), key material offset (sectors), anti-forensic stripes

QEMU recognises only version 1: a LUKS2 volume (version 2) is "raw" to ``qemu-img``, and so
it is here (the disk survey sees its LUKS signature).

NOTE (safety): a LUKS volume names no other file. Its guest bytes are encrypted, so no
guest view is offered; the header's offsets are only checked against the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagewright.binary import ByteSource, Layout, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats import probes
from imagewright.formats.base import Limits, OpenedImage

MAGIC = probes.LUKS_MAGIC
VERSION = probes.LUKS_VERSION
SECTOR = 512
SLOT_ENABLED = 0x00AC71F3
SLOT_DISABLED = 0x0000DEAD
KEY_SLOTS = 8

HEADER = Layout(
    "LUKS header",
    ">",
    [
        ("magic", "6s"),
        ("version", "H"),
        ("cipher_name", "32s"),
        ("cipher_mode", "32s"),
        ("hash_spec", "32s"),
        ("payload_offset", "I"),
        ("key_bytes", "I"),
        ("mk_digest", "20s"),
        ("mk_digest_salt", "32s"),
        ("mk_digest_iterations", "I"),
        ("uuid", "40s"),
    ],
)
KEY_SLOT = Layout(
    "LUKS key slot",
    ">",
    [("active", "I"), ("iterations", "I"), ("salt", "32s"), ("key_offset", "I"), ("stripes", "I")],
)


@dataclass(frozen=True)
class LuksKeySlot:
    active: bool
    iterations: int
    key_offset: int
    stripes: int


@dataclass(frozen=True)
class LuksDetails:
    version: int
    cipher_name: str
    cipher_mode: str
    hash_spec: str
    payload_offset: int
    key_bytes: int
    master_key_iterations: int
    uuid: str
    slots: tuple[LuksKeySlot, ...]


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


#: The signature check lives in ``probes``: the registry probes every format without importing its reader.
probe = probes.luks


def open_image(src: ByteSource, limits: Limits) -> OpenedImage:
    """Read the LUKS1 header; the virtual size is what follows the payload offset."""
    raw = read_exact(src, 0, HEADER.size + KEY_SLOTS * KEY_SLOT.size, "LUKS header")
    fields = HEADER.unpack(raw)
    if fields["magic"] != MAGIC or fields["version"] != VERSION:
        raise ImageFormatError("The file is not a LUKS1 volume (no LUKS magic with version 1).")
    if fields["key_bytes"] not in (16, 24, 32, 48, 64):
        raise ImageFormatError(
            f"The LUKS master key length {fields['key_bytes']} bytes is not a valid key size."
        )
    payload = fields["payload_offset"] * SECTOR
    if payload > src.size:
        raise ImageFormatError(
            f"The LUKS payload starts at byte {payload}, beyond the end of the {src.size}-byte file."
        )
    problems: list[str] = []
    slots = []
    for index in range(KEY_SLOTS):
        slot = KEY_SLOT.unpack(raw, HEADER.size + index * KEY_SLOT.size)
        if slot["active"] not in (SLOT_ENABLED, SLOT_DISABLED):
            problems.append(f"LUKS key slot {index} has the invalid state 0x{slot['active']:08x}")
        key_offset = slot["key_offset"] * SECTOR
        # Key material (key bytes x stripes) must sit between the header and the payload.
        material = fields["key_bytes"] * slot["stripes"]
        if slot["active"] == SLOT_ENABLED and (key_offset < HEADER.size or key_offset + material > payload):
            problems.append(f"LUKS key slot {index} keeps its key material outside the header area")
        slots.append(
            LuksKeySlot(
                active=slot["active"] == SLOT_ENABLED,
                iterations=slot["iterations"],
                key_offset=key_offset,
                stripes=slot["stripes"],
            )
        )
    details = LuksDetails(
        version=fields["version"],
        cipher_name=_text(fields["cipher_name"]),
        cipher_mode=_text(fields["cipher_mode"]),
        hash_spec=_text(fields["hash_spec"]),
        payload_offset=payload,
        key_bytes=fields["key_bytes"],
        master_key_iterations=fields["mk_digest_iterations"],
        uuid=_text(fields["uuid"]),
        slots=tuple(slots),
    )
    # QEMU measures the file in whole sectors (rounded up) before subtracting the payload offset.
    file_size = -(-src.size // SECTOR) * SECTOR
    return OpenedImage(
        format="luks",
        virtual_size=file_size - payload,
        details=details,
        encryption="luks",
        problems=problems,
    )
