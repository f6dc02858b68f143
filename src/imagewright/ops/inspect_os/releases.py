"""Which distribution: os-release first, then lsb-release, redhat-release, alpine-release,
debian_version.

Sources: os-release(5) (freedesktop.org: ``KEY=value`` lines, values in shell quoting, keys
``[A-Z][A-Z0-9_]*``, ``/etc/os-release`` before ``/usr/lib/os-release``); lsb_release(1)
(``/etc/lsb-release``: ``DISTRIB_ID``, ``DISTRIB_RELEASE``, ``DISTRIB_CODENAME``,
``DISTRIB_DESCRIPTION``); the one-line ``/etc/redhat-release`` ("CentOS Linux release 7.9.2009
(Core)"), ``/etc/alpine-release`` ("3.19.1") and ``/etc/debian_version`` ("12.5").

NOTE: the files are untrusted. A value is at most ``MAX_VALUE`` characters with control
characters dropped, a file at most ``MAX_RELEASE_FILE`` bytes and ``MAX_LINES`` lines; lines
that are not assignments (binary garbage, shell code) are ignored, never an error.
"""

from __future__ import annotations

import re

from imagewright.guest.bounded import GuestReader, lines
from imagewright.ops.inspect_os.model import Distribution

#: The most bytes a release file is read from (real ones are under 1 KiB).
MAX_RELEASE_FILE = 64 * 1024
MAX_LINES = 1000
MAX_VALUE = 256

OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
#: Every file looked at (``GuestReader.prefetch``).
LOOKS_AT = (
    *OS_RELEASE_FILES,
    "/etc/lsb-release",
    "/etc/redhat-release",
    "/etc/alpine-release",
    "/etc/debian_version",
)

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=(.*)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REDHAT = re.compile(r"^(?P<name>.+?)\s+release\s+(?P<version>[0-9][0-9.]*)(?:\s+\((?P<codename>[^)]*)\))?")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+~_-]*$")


def _unquote(raw: str) -> str:
    """A shell-quoted value as os-release(5) allows: "...", '...' or bare, with \\-escapes."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        inner = raw[1:-1]
        if raw[0] == '"':
            inner = re.sub(r"\\([\\$\"`])", r"\1", inner)
        return inner
    return re.sub(r"\\(.)", r"\1", raw)


def _clean(value: str) -> str | None:
    value = _CONTROL.sub("", value).strip()[:MAX_VALUE]
    return value or None


def parse_assignments(text: str) -> dict[str, str]:
    """``KEY=value`` lines of os-release/lsb-release; the last of a repeated key wins."""
    result: dict[str, str] = {}
    for line in lines(text, MAX_LINES):
        match = _ASSIGNMENT.match(line)
        if match is None:
            continue
        value = _clean(_unquote(match.group(2)))
        if value is not None:
            result[match.group(1)] = value
    return result


def from_os_release(fields: dict[str, str]) -> Distribution:
    codename = fields.get("VERSION_CODENAME") or fields.get("UBUNTU_CODENAME")
    version = fields.get("VERSION")
    if codename is None and version and fields.get("ID") == "debian" and "VERSION_CODENAME" not in fields:
        # Debian 8 puts it only in VERSION: "8 (jessie)" (Fedora's parentheses hold an edition).
        found = re.search(r"\(([A-Za-z][A-Za-z0-9 ._-]*)\)", version)
        codename = found.group(1).split()[0].lower() if found else None
    identifier = fields.get("ID")
    return Distribution(
        id=identifier.lower() if identifier else None,
        name=fields.get("NAME"),
        version=version,
        version_id=fields.get("VERSION_ID"),
        codename=codename,
        pretty_name=fields.get("PRETTY_NAME"),
        id_like=[word.lower() for word in fields.get("ID_LIKE", "").split()][:16],
    )


def parse_redhat_release(text: str) -> Distribution | None:
    for line in lines(text, 10):
        match = _REDHAT.match(_CONTROL.sub("", line).strip())
        if match is None:
            continue
        name = match.group("name")[:MAX_VALUE]
        lowered = name.lower()
        identifier = (
            "rhel"
            if lowered.startswith("red hat")
            else "centos"
            if lowered.startswith("centos")
            else "fedora"
            if lowered.startswith("fedora")
            else "rocky"
            if lowered.startswith("rocky")
            else "almalinux"
            if lowered.startswith("almalinux")
            else re.sub(r"[^a-z0-9]+", "", lowered.split()[0])[:32] or None
        )
        version = match.group("version")[:32]
        codename = match.group("codename")
        return Distribution(
            id=identifier,
            name=name,
            version=version,
            version_id=version,
            codename=codename[:MAX_VALUE] if codename else None,
            pretty_name=_clean(line),
        )
    return None


def parse_single_version(text: str) -> str | None:
    """The version on the first line of alpine-release or debian_version, if it is one."""
    for line in lines(text, 1):
        word = _CONTROL.sub("", line).strip()[:32]
        if _VERSION.match(word):
            return word
    return None


def read_distribution(reader: GuestReader) -> Distribution:
    """What the guest says it is, believing os-release first and filling gaps from the rest."""
    found = Distribution()
    for path in OS_RELEASE_FILES:
        text = reader.text(path, MAX_RELEASE_FILE, "an os-release file")
        if text is None:
            continue
        fields = parse_assignments(text)
        if not fields:
            reader.note(f"{path} holds no KEY=value line")
            continue
        found = from_os_release(fields)
        found.sources.append(path)
        break
    lsb = reader.text("/etc/lsb-release", MAX_RELEASE_FILE, "lsb-release")
    if lsb is not None:
        fields = parse_assignments(lsb)
        if fields:
            found.sources.append("/etc/lsb-release")
            if found.id is None and "DISTRIB_ID" in fields:
                found.id = fields["DISTRIB_ID"].lower()
                found.name = fields["DISTRIB_ID"]
            found.version_id = found.version_id or fields.get("DISTRIB_RELEASE")
            found.codename = found.codename or fields.get("DISTRIB_CODENAME")
            found.pretty_name = found.pretty_name or fields.get("DISTRIB_DESCRIPTION")
    redhat_text = reader.text("/etc/redhat-release", MAX_RELEASE_FILE, "redhat-release")
    redhat = parse_redhat_release(redhat_text) if redhat_text is not None else None
    if redhat is not None:
        found.sources.append("/etc/redhat-release")
        if found.id is None:
            redhat.sources = found.sources
            found = redhat
        else:
            found.codename = found.codename or redhat.codename
            # os-release has only "7" on CentOS 7; redhat-release says "7.9.2009".
            if redhat.version_id and found.version_id and redhat.version_id.startswith(found.version_id):
                found.version = found.version or redhat.version
    for path, identifier, name in (
        ("/etc/alpine-release", "alpine", "Alpine Linux"),
        ("/etc/debian_version", "debian", "Debian GNU/Linux"),
    ):
        text = reader.text(path, MAX_RELEASE_FILE, path.rpartition("/")[2])
        version = parse_single_version(text) if text is not None else None
        if version is None:
            continue
        found.sources.append(path)
        if found.id is None:
            found.id, found.name = identifier, name
        if found.id == identifier and (found.version_id is None or version.startswith(found.version_id)):
            # The point release lives only here (os-release says 12, debian_version 12.5).
            found.version = version if found.version is None or found.id == "alpine" else found.version
            found.version_id = found.version_id or version
    return found
