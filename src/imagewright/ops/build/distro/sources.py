"""Where the packages come from: the apt sources a distribution build gives mmdebstrap.

Three ways, in this order of precedence:

- ``--snapshot YYYYMMDDTHHMMSSZ``: the archive as it was at that moment, from a snapshot
  service laid out like snapshot.debian.org (``BASE/archive/debian/STAMP/``, and
  ``debian-security`` beside it). ``--mirror`` then names the service's base URL. apt is told
  not to reject the old Release files (``check-valid-until=no``).
- ``--mirror URL``: that archive, the release's own suite only (no ``-updates`` or
  ``-security``: a mirror named by hand may carry neither).
- Neither: the archive this machine's own apt uses for the vendor (``/etc/apt/sources.list``
  and ``sources.list.d/*.list``/``*.sources``, one-line and deb822 formats), with the release's
  ``-updates`` suite and the security archive beside it when the machine has one. A machine
  whose apt names no such archive gets the vendor's own archive when the release table names
  one (Ubuntu: archive.ubuntu.com with ``-updates``, and ``-security`` from
  security.ubuntu.com), else mmdebstrap's choice (its default mirror, with updates and security
  added for a stable release).

Every entry is written in one-line form with ``signed-by=`` the keyring the build checks the
archive with (``Release.keyring``: the host's, else the copy imagewright ships), so the image's
/etc/apt/sources.list names the key its archive is checked with (the apt-sources customisation
points it at the guest's own copy when the build used the shipped one).

Sources: sources.list(5) (both formats), mmdebstrap(1) (MIRROR arguments).
"""

from __future__ import annotations

import calendar
import hashlib
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import BuildError, InvalidArgumentError, ProgramNotFoundError
from imagewright.ops.build.distro.release import Release

#: The public snapshot service of the Debian archive (used for --snapshot without --mirror).
DEBIAN_SNAPSHOT_SERVICE = "http://snapshot.debian.org"
#: Where apt's configuration lists its sources.
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
#: A sources file larger than this is not one.
MAX_SOURCES_BYTES = 1 << 20
#: An InRelease file larger than this is not one (Debian's and Ubuntu's are 0.1–0.3 MiB).
MAX_RELEASE_BYTES = 16 << 20
RELEASE_TIMEOUT_SECONDS = 30.0
_STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")
_URL = re.compile(r"(https?|file)://[^\s\[\]]+")


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` entry of the host's apt configuration (one URI, one suite)."""

    uri: str
    suite: str
    components: tuple[str, ...]


@dataclass(frozen=True)
class Sources:
    """The apt sources of one build, and how they were chosen (for the report)."""

    #: One-line entries for mmdebstrap (empty: mmdebstrap's own default).
    lines: tuple[str, ...]
    #: "snapshot", "mirror", "host", "vendor default" or "mmdebstrap default".
    origin: str
    #: The main archive's URL (None for mmdebstrap's default).
    mirror: str | None
    snapshot: str | None = None

    def describe(self) -> str:
        if self.mirror is None:
            return "mmdebstrap's default mirror"
        text = self.mirror
        if self.snapshot:
            text += f" (snapshot {self.snapshot})"
        elif self.origin == "host":
            text += " (this machine's apt sources)"
        elif self.origin == "vendor default":
            text += " (the vendor's archive)"
        return text


def parse_snapshot(text: str) -> tuple[str, int]:
    """``20250520T000000Z`` → (the stamp, its Unix time); InvalidArgumentError otherwise."""
    match = _STAMP.fullmatch(text.strip())
    if match is not None:
        try:
            parts = [int(p) for p in match.groups()]
            parsed = time.struct_time((*parts, 0, 0, 0))
            seconds = calendar.timegm(parsed)
            if time.gmtime(seconds)[:6] == tuple(parts):
                return text.strip(), seconds
        except (ValueError, OverflowError):
            pass
    raise InvalidArgumentError(
        f"'{text}' is not a snapshot time; write it as YYYYMMDDTHHMMSSZ, for example 20250520T000000Z."
    )


def check_mirror(url: str) -> str:
    """The mirror URL without a trailing slash; InvalidArgumentError if it is not a URL."""
    url = url.strip()
    if not _URL.fullmatch(url):
        raise InvalidArgumentError(
            f"'{url}' is not a mirror URL; give an http://, https:// or file:// URL such as "
            "http://mirror.example.org/debian."
        )
    return url.rstrip("/")


def _entry(release: Release, uri: str, suite: str, options: str = "") -> str:
    signed = f"signed-by={release.keyring}"
    opts = f"{signed} {options}".strip()
    return f"deb [{opts}] {uri} {suite} {' '.join(release.vendor.components)}"


def check_keyring(release: Release) -> None:
    """The archive keyring must exist: a build is never unverified."""
    if not release.keyring.is_file():
        raise ProgramNotFoundError(
            f"The {release.vendor.title} archive keyring {release.vendor.keyring} is not installed; "
            f"install the Debian package '{release.vendor.keyring_package}'."
        )


def choose_sources(
    release: Release,
    *,
    mirror: str | None = None,
    snapshot: str | None = None,
    host_sources: list[AptSource] | None = None,
) -> Sources:
    """The sources of a build of ``release`` (see the module docstring for the rules)."""
    codename = release.codename
    if snapshot is not None:
        stamp, _ = parse_snapshot(snapshot)
        if release.vendor.name != "debian":
            raise InvalidArgumentError(
                f"--snapshot needs a snapshot service of the {release.vendor.title} archive; "
                "imagewright knows only Debian's."
            )
        base = check_mirror(mirror) if mirror else DEBIAN_SNAPSHOT_SERVICE
        main = f"{base}/archive/debian/{stamp}"
        lines = [_entry(release, main, codename, "check-valid-until=no")]
        if release.has_updates:
            lines.append(_entry(release, main, f"{codename}-updates", "check-valid-until=no"))
            security = f"{base}/archive/debian-security/{stamp}"
            lines.append(_entry(release, security, f"{codename}-security", "check-valid-until=no"))
        return Sources(tuple(lines), "snapshot", main, stamp)
    if mirror is not None:
        url = check_mirror(mirror)
        return Sources((_entry(release, url, codename),), "mirror", url)
    found = host_sources if host_sources is not None else read_host_sources()
    main_uri = _host_uri(found, release, security=False)
    origin = "host"
    security_uri = _host_uri(found, release, security=True)
    if main_uri is None:
        if release.vendor.default_mirror is None:
            return Sources((), "mmdebstrap default", None)
        main_uri, security_uri = release.vendor.default_mirror, release.vendor.security_mirror
        origin = "vendor default"
    lines = [_entry(release, main_uri, codename)]
    if release.has_updates:
        lines.append(_entry(release, main_uri, f"{codename}-updates"))
        if security_uri is not None:
            lines.append(_entry(release, security_uri, f"{codename}-security"))
    return Sources(tuple(lines), origin, main_uri)


def host_mirror(release: Release) -> str | None:
    """The archive this machine's apt uses for ``release``'s vendor (None if it names none)."""
    return _host_uri(read_host_sources(), release, security=False)


def _host_uri(found: list[AptSource], release: Release, *, security: bool) -> str | None:
    """The URI of the host's first source of ``release``'s vendor (its security archive)."""
    codenames = set(release.vendor.releases) | set(release.vendor.aliases)
    for source in found:
        base, _, pocket = source.suite.partition("-")
        base = base.split("/")[0]
        if base not in codenames:
            continue
        if (pocket == "security") == security and (security or pocket in ("", "updates")):
            return source.uri.rstrip("/")
    return None


def read_host_sources(
    sources_list: Path = APT_SOURCES, sources_dir: Path = APT_SOURCES_DIR
) -> list[AptSource]:
    """The host's ``deb`` entries, one per URI and suite, in apt's reading order."""
    files: list[Path] = []
    if sources_list.is_file():
        files.append(sources_list)
    if sources_dir.is_dir():
        files += sorted(p for p in sources_dir.iterdir() if p.suffix in (".list", ".sources") and p.is_file())
    found: list[AptSource] = []
    for path in files:
        try:
            with path.open("rb") as f:
                text = f.read(MAX_SOURCES_BYTES).decode("utf-8", "replace")
        except OSError:
            continue  # an unreadable file is apt's problem, not the build's
        found += parse_deb822(text) if path.suffix == ".sources" else parse_one_line(text)
    return found


def parse_one_line(text: str) -> list[AptSource]:
    """``deb [options] URI suite [component...]`` lines (``deb-src`` and comments skipped)."""
    found: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        if rest.startswith("["):
            closing = rest.find("]")
            if closing < 0:
                continue
            rest = rest[closing + 1 :].strip()
        words = rest.split()
        if len(words) >= 2 and _URL.fullmatch(words[0]):
            found.append(AptSource(words[0], words[1], tuple(words[2:])))
    return found


def parse_deb822(text: str) -> list[AptSource]:
    """deb822 stanzas with ``Types: deb`` (``Enabled: no`` skipped), one entry per URI and suite."""
    found: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += " " + raw.strip()
                continue
            name, sep, value = raw.partition(":")
            if sep:
                key = name.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            if not _URL.fullmatch(uri):
                continue
            for suite in fields.get("suites", "").split():
                found.append(AptSource(uri, suite, components))
    return found


def release_file_url(line: str) -> str:
    """``deb [opts] URI SUITE comp…`` → ``URI/dists/SUITE/InRelease``."""
    words = line.split()
    if words[:1] != ["deb"]:
        raise ValueError(f"{line!r} is not a one-line deb entry")
    rest = words[1:]
    if rest and rest[0].startswith("["):
        while rest and not rest[0].endswith("]"):
            rest = rest[1:]
        rest = rest[1:]
    if len(rest) < 2:
        raise ValueError(f"{line!r} names no URI and suite")
    return f"{rest[0].rstrip('/')}/dists/{rest[1]}/InRelease"


def archive_state(sources: Sources) -> dict[str, str]:
    """SHA-256 of each source's ``InRelease``: what the archive offers now (a cache key part).

    A snapshot's files never change, so its stamp alone says it. BuildError when a file cannot
    be read (the build itself would fail on the same archive).
    """
    if sources.snapshot is not None:
        return {"snapshot": sources.snapshot}
    if not sources.lines:
        raise BuildError("mmdebstrap's default mirror has no state imagewright can read")
    state: dict[str, str] = {}
    for line in sources.lines:
        url = release_file_url(line)
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=RELEASE_TIMEOUT_SECONDS) as response:  # noqa: S310
                total = 0
                while chunk := response.read(1 << 16):
                    total += len(chunk)
                    if total > MAX_RELEASE_BYTES:
                        raise BuildError(f"{url} is larger than any InRelease file")
                    digest.update(chunk)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise BuildError(f"{url} could not be read ({reason})") from None
        state[url] = digest.hexdigest()
    return state
