"""The rest of what a guest is: init system, hostname, fstab, cloud-init, agent, SSH server.

Sources: hostname(5) (``/etc/hostname``: one name; RHEL 6 ``HOSTNAME=`` in
``/etc/sysconfig/network``); fstab(5) (six whitespace-separated fields, ``\\040``-style octal
escapes, ``UUID=``/``LABEL=``/``PARTUUID=``/``PARTLABEL=`` tags and ``/dev/disk/by-*`` links);
cloud-init's ``datasource_list`` (``/etc/cloud/cloud.cfg``, then ``cloud.cfg.d/*.cfg`` in
lexical order, the last one setting it wins) and its version (``cloudinit/version.py``
``__VERSION__``, or the package database).

NOTE: every file is untrusted and read through ``GuestReader`` with its own size bound; the
cloud-init configuration is YAML but only the ``datasource_list`` key is read, by a small
line parser (no YAML loader: anchors and aliases make it a memory bomb).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from imagewright.guest.bounded import GuestReader, lines
from imagewright.ops.inspect_os.model import CloudInit, FstabEntry, PackageDatabase

MAX_SMALL_FILE = 64 * 1024
MAX_FSTAB_ENTRIES = 1000
MAX_CLOUD_CFG = 1024 * 1024
MAX_DATASOURCES = 64

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*$")
_OCTAL = re.compile(r"\\([0-7]{3})")
_DATASOURCE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_VERSION_PY = re.compile(r"""^__VERSION__\s*=\s*["']([0-9][0-9A-Za-z.+~-]{0,63})["']""")
INIT_MARKERS = ("/sbin/openrc", "/usr/sbin/openrc", "/sbin/openrc-init")
CLOUD_INIT_MARKERS = (
    "/usr/bin/cloud-init",
    "/etc/cloud/cloud.cfg",
    "/usr/lib/python3/dist-packages/cloudinit",
)
SSH_SERVERS = (("/usr/sbin/sshd", "openssh"), ("/sbin/sshd", "openssh"), ("/usr/sbin/dropbear", "dropbear"))
CLOUD_INIT_VERSION_FILES = (
    "/usr/lib/python3/dist-packages/cloudinit/version.py",
    "/usr/lib/python3*/site-packages/cloudinit/version.py",
)
#: Every file looked at, and the directories listed (``GuestReader.prefetch``).
LOOKS_AT = (
    "/sbin/init",
    "/usr/sbin/init",
    "/sbin/initctl",
    "/etc/init",
    "/etc/inittab",
    *INIT_MARKERS,
    "/etc/hostname",
    "/etc/sysconfig/network",
    "/etc/fstab",
    *CLOUD_INIT_MARKERS,
    CLOUD_INIT_VERSION_FILES[0],
    *(path for path, _ in SSH_SERVERS),
)
LISTS = ("/etc/cloud/cloud.cfg.d",)


def read_init_system(reader: GuestReader) -> str | None:
    """systemd, openrc, upstart, sysvinit or busybox: what /sbin/init is (links followed)."""
    init = reader.resolve("/sbin/init") or reader.resolve("/usr/sbin/init")
    if init is not None and "systemd" in init:
        return "systemd"
    if reader.exists(*INIT_MARKERS) is not None:
        return "openrc"
    if init is not None and init.rpartition("/")[2] == "upstart":
        return "upstart"
    if reader.exists("/sbin/initctl") is not None and reader.is_dir("/etc/init"):
        return "upstart"
    if init is not None and init.rpartition("/")[2] == "busybox":
        return "busybox"
    if init is not None and reader.exists("/etc/inittab") is not None:
        return "sysvinit"
    return None


def read_hostname(reader: GuestReader) -> str | None:
    text = reader.text("/etc/hostname", MAX_SMALL_FILE, "a hostname file")
    candidates: list[str] = []
    if text is not None:
        candidates += [
            line.strip() for line in lines(text, 100) if line.strip() and not line.startswith("#")
        ][:1]
    network = reader.text("/etc/sysconfig/network", MAX_SMALL_FILE, "a network configuration")
    if network is not None:
        for line in lines(network, 1000):
            if line.startswith("HOSTNAME="):
                candidates.append(line[len("HOSTNAME=") :].strip().strip("\"'"))
    for name in candidates:
        if len(name) <= 253 and _HOSTNAME.match(name):
            return name
        reader.note("the guest's hostname is not a valid host name; it is not shown")
    return None


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_fstab(reader: GuestReader, resolves: Callable[[str], bool | None]) -> list[FstabEntry]:
    text = reader.text("/etc/fstab", MAX_SMALL_FILE * 16, "an fstab")
    if text is None:
        return []
    entries: list[FstabEntry] = []
    for line in lines(text, 100_000):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) < 3:
            continue
        if len(entries) >= MAX_FSTAB_ENTRIES:
            reader.note(f"/etc/fstab has more than {MAX_FSTAB_ENTRIES} entries; the rest were not read")
            break
        spec, mountpoint, fs_type = (_unescape(f)[:1024] for f in fields[:3])
        options = fields[3][:1024] if len(fields) > 3 else "defaults"
        entries.append(FstabEntry(spec, mountpoint, fs_type, options, resolves(spec)))
    return entries


def parse_datasource_list(text: str) -> list[str] | None:
    """The ``datasource_list`` a cloud-init configuration sets (flow or block list), or None."""
    result: list[str] | None = None
    collecting = False
    for line in lines(text, 100_000):
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        if collecting:
            item = stripped.strip()
            if item.startswith("- ") and line[:1] in (" ", "-", "\t"):
                name = item[2:].strip().strip("\"'")
                if result is not None and _DATASOURCE.match(name) and len(result) < MAX_DATASOURCES:
                    result.append(name)
                continue
            collecting = False
        if stripped.startswith("datasource_list:"):
            value = stripped[len("datasource_list:") :].strip()
            if value.startswith("["):
                names = [n.strip().strip("\"'") for n in value.strip("[] ").split(",")]
                result = [n for n in names if _DATASOURCE.match(n)][:MAX_DATASOURCES]
            else:
                result = []
                collecting = True
    return result


def read_cloud_init(reader: GuestReader, databases: list[PackageDatabase]) -> CloudInit:
    marker = reader.exists(*CLOUD_INIT_MARKERS)
    if marker is None:
        return CloudInit(present=False)
    version = next((v for db in databases if (v := db.version_of("cloud-init"))), None)
    if version is None:
        for pattern in CLOUD_INIT_VERSION_FILES:
            for path in reader.glob(pattern) if "*" in pattern else [pattern]:
                text = reader.text(path, MAX_SMALL_FILE, "cloud-init's version file")
                for line in lines(text or "", 1000):
                    if found := _VERSION_PY.match(line):
                        version = found.group(1)
    datasources: list[str] = []
    configs = ["/etc/cloud/cloud.cfg", *sorted(reader.glob("/etc/cloud/cloud.cfg.d/*.cfg"))[:1000]]
    for config in configs:
        text = reader.text(config, MAX_CLOUD_CFG, "a cloud-init configuration")
        found_list = parse_datasource_list(text) if text is not None else None
        if found_list is not None:
            datasources = found_list
    return CloudInit(present=True, version=version, datasources=datasources)


def read_ssh_server(reader: GuestReader) -> str | None:
    found = reader.exists(*(path for path, _ in SSH_SERVERS))
    return dict(SSH_SERVERS)[found] if found is not None else None
