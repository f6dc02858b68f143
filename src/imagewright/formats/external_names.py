"""What kind of thing a file name stored inside an image points at, in words.

Backing files (qcow, qcow2), external data files (qcow2), parents and extents (VMDK) are
names that a converter resolves and opens. QEMU gives such a name special meaning when it
starts with a protocol prefix — any ``word:`` before the first ``/`` (``path_has_protocol``
in ``block.c``) — or with ``json:`` (a whole block-driver tree, which may name any file or
network server). The description goes into ``ExternalReference.detail`` so a user sees at
once whether the image points next door, at ``/etc/shadow``, at a device or at a server.
"""

from __future__ import annotations

import re

#: Protocol prefixes QEMU block drivers register, and what they reach.
_PROTOCOLS: dict[str, str] = {
    "json": "a json: pseudo-protocol specification; QEMU would open whatever driver, file or server it names",
    "nbd": "an NBD network block device",
    "nbd+unix": "an NBD network block device on a Unix socket",
    "nbd+tcp": "an NBD network block device",
    "http": "an HTTP URL",
    "https": "an HTTPS URL",
    "ftp": "an FTP URL",
    "ftps": "an FTPS URL",
    "ssh": "an SSH URL",
    "iscsi": "an iSCSI target",
    "rbd": "a Ceph RBD volume",
    "gluster": "a GlusterFS volume",
    "gluster+tcp": "a GlusterFS volume",
    "gluster+unix": "a GlusterFS volume",
    "gluster+rdma": "a GlusterFS volume",
    "nfs": "an NFS share",
    "sheepdog": "a Sheepdog volume",
    "vxhs": "a VxHS volume",
    "file": "an explicit file: path",
    "host_device": "a host device",
    "host_cdrom": "a host CD-ROM device",
    "null-co": "a null block device",
    "null-aio": "a null block device",
    "blkdebug": "a blkdebug filter that opens another file",
    "blkverify": "a blkverify filter that opens other files",
    "quorum": "a quorum of other images",
    "vvfat": "a host directory exposed as a FAT disk",
    "fat": "a host directory exposed as a FAT disk",
}

#: Patterns ``re`` compiles (and caches) on first use: most images name no other file.
_PROTOCOL = r"^([A-Za-z0-9_.+-]+):"
_WINDOWS_ABSOLUTE = r"^(?:[A-Za-z]:[\\/]|\\\\)"


def protocol_prefix(name: str) -> str | None:
    """The protocol QEMU would see in ``name`` (``"nbd"`` for ``nbd://host``), or None."""
    if name.startswith("json:"):
        return "json"
    match = re.match(_PROTOCOL, name)
    if match is None:
        return None
    # QEMU only treats "word:" as a protocol when no '/' comes before the colon.
    return match.group(1).lower()


def describe_external_name(name: str) -> str:
    """One phrase saying what ``name`` points at (used as ``ExternalReference.detail``)."""
    protocol = protocol_prefix(name)
    if protocol is not None and not re.match(_WINDOWS_ABSOLUTE, name):
        known = _PROTOCOLS.get(protocol)
        if protocol == "json":
            return _PROTOCOLS["json"]
        if known is not None:
            return f"{known}, by the {protocol}: pseudo-protocol"
        return f"the '{protocol}:' pseudo-protocol prefix, which QEMU hands to a block driver"
    if name.startswith("/dev/") or name.startswith("\\\\.\\"):
        return "a device, by absolute path"
    if name.startswith("/") or re.match(_WINDOWS_ABSOLUTE, name):
        return "an absolute path"
    parts = re.split(r"[\\/]+", name)
    if ".." in parts:
        return "a path that climbs out of the image's directory with '..'"
    if len(parts) > 1:
        return "another file, in a subdirectory next to the image"
    return "another file next to the image"


def stored_name(field: bytes) -> tuple[str, str | None]:
    """A name field stored in an image, as QEMU reads it (a C string), and what hides after it.

    QEMU copies the field and stops at the first NUL; a reader that takes the field's full
    length sees the rest too. Returns the name QEMU uses and, when the field holds more than
    NUL padding after that NUL, the hidden text.
    """
    name, nul, rest = field.partition(b"\0")
    hidden = rest.strip(b"\0")
    return (
        name.decode("utf-8", errors="backslashreplace"),
        hidden.decode("utf-8", errors="backslashreplace") if nul and hidden else None,
    )


def stored_name_problems(field: bytes, what: str) -> list[str]:
    """Reasons to refuse a stored ``what`` name field that readers would read differently."""
    name, hidden = stored_name(field)
    problems: list[str] = []
    if hidden is not None:
        problems.append(
            f"the {what} name field holds '{hidden}' after a NUL byte; QEMU reads only "
            f"'{name}', a reader that takes the whole field reads more"
        )
    elif not name:
        problems.append(
            f"the header points at a {what} name that QEMU reads as empty ({len(field)} bytes); "
            "other readers may not ignore it"
        )
    return problems
