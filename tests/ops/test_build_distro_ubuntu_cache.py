"""Ubuntu releases (sources, keyring, packages) and the root filesystem cache of distribution
builds, without the network: keys, invalidation, bounds, the archive's state over file://."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_program

from imagewright.errors import BuildError, InvalidArgumentError
from imagewright.ops.build.distro import CustomizationReport, _rootfs_inputs, _Scripts, _write_scripts
from imagewright.ops.build.distro.cache import RootfsCache, rootfs_key
from imagewright.ops.build.distro.customizations import BY_NAME, CUSTOMIZATIONS, TargetScript
from imagewright.ops.build.distro.customizations.cloud_init import CONFIG_FILE
from imagewright.ops.build.distro.plan import DistroPlan
from imagewright.ops.build.distro.release import UBUNTU_ARCHIVE_KEY, parse_release
from imagewright.ops.build.distro.sources import (
    AptSource,
    archive_state,
    choose_sources,
    release_file_url,
)
from imagewright.programs.mmdebstrap import MmdebstrapRequest

NOBLE = parse_release("ubuntu:noble")
JAMMY = parse_release("ubuntu:jammy")
BOOKWORM = parse_release("debian:bookworm")


def _plan(release: str = "ubuntu:noble", **changes: object) -> DistroPlan:
    rel = parse_release(release)
    fields: dict[str, object] = {
        "release": rel, "variant": "minbase", "packages": (), "context": "cloud-init",
        "kernel_flavour": "cloud", "sources": choose_sources(rel, host_sources=[]), "source_date_epoch": 0,
    }  # fmt: skip
    fields.update(changes)
    return DistroPlan(**fields)  # type: ignore[arg-type]


# ---- Ubuntu ----------------------------------------------------------------------------------


def test_ubuntu_sources_default_to_the_ubuntu_archive_with_updates_and_security() -> None:
    sources = choose_sources(NOBLE, host_sources=[AptSource("http://deb.example/debian", "bookworm", ())])
    assert sources.origin == "vendor default" and sources.mirror == "http://archive.ubuntu.com/ubuntu"
    assert [line.split()[2:] for line in sources.lines] == [
        ["http://archive.ubuntu.com/ubuntu", "noble", "main", "universe"],
        ["http://archive.ubuntu.com/ubuntu", "noble-updates", "main", "universe"],
        ["http://security.ubuntu.com/ubuntu", "noble-security", "main", "universe"],
    ]
    keyring = NOBLE.keyring
    assert all(line.startswith(f"deb [signed-by={keyring}] ") for line in sources.lines)
    assert "the vendor's archive" in sources.describe()
    # A host that has an Ubuntu archive in its apt sources lends it, as for Debian.
    host = choose_sources(JAMMY, host_sources=[AptSource("http://ubuntu.example/ubuntu", "jammy", ("main",))])
    assert host.origin == "host" and host.lines[0].split()[2:4] == ["http://ubuntu.example/ubuntu", "jammy"]
    # --mirror: that archive's own suite only.
    mirror = choose_sources(JAMMY, mirror="http://m.example/ubuntu")
    assert len(mirror.lines) == 1 and mirror.lines[0].endswith(" jammy main universe")


def test_the_ubuntu_keyring_is_the_host_s_or_the_shipped_2018_archive_key() -> None:
    """gpg (an independent reader) finds exactly Ubuntu's 2018 archive key in the shipped copy."""
    gpg = require_program("gpg")
    keyring = NOBLE.vendor.bundled_keyring
    assert keyring is not None and keyring.is_file()
    home = Path(os.environ.get("TMPDIR", "/tmp"))
    result = subprocess.run(
        [gpg, "--homedir", str(home), "--no-options", "--show-keys", "--with-colons", str(keyring)],
        capture_output=True, text=True, check=True, env={**os.environ, "GNUPGHOME": str(home)},
    )  # fmt: skip
    fingerprints = [line.split(":")[9] for line in result.stdout.splitlines() if line.startswith("fpr:")]
    assert fingerprints == [UBUNTU_ARCHIVE_KEY]
    assert "Ubuntu Archive Automatic Signing Key (2018)" in result.stdout
    expected = NOBLE.vendor.keyring if NOBLE.vendor.keyring.is_file() else keyring
    assert NOBLE.keyring == expected
    assert BOOKWORM.keyring == Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def test_ubuntu_packages_kernel_and_resolved_follow_the_release() -> None:
    noble, jammy = _plan("ubuntu:noble"), _plan("ubuntu:jammy")
    assert BY_NAME["kernel"].packages(noble)[0] == "linux-image-virtual"
    assert BY_NAME["kernel"].packages(_plan("ubuntu:noble", kernel_flavour="generic"))[0] == (
        "linux-image-generic"
    )
    # systemd-resolved is its own package in noble, part of systemd in jammy (and Debian 11).
    assert BY_NAME["network"].packages(noble) == ("systemd-resolved",)
    assert BY_NAME["network"].packages(jammy) == ()
    assert BY_NAME["network"].packages(_plan("debian:bullseye")) == ()
    assert BY_NAME["network"].packages(_plan("debian:bookworm")) == ("systemd-resolved",)
    assert BY_NAME["apt-sources"].packages(noble) == ("ubuntu-keyring",)
    assert "grub-pc" in BY_NAME["boot-loader"].packages(noble)


def test_the_guest_s_sources_name_its_own_keyring(tmp_path: Path) -> None:
    """With the shipped keyring, the script rewrites signed-by= to the guest's keyring (run by dash)."""
    dash = require_program("dash")
    plan = _plan("ubuntu:noble")
    script = TargetScript()
    assert BY_NAME["apt-sources"].customize is not None
    BY_NAME["apt-sources"].customize(plan, script)
    if plan.release.keyring == plan.release.vendor.keyring:
        assert script.lines == []  # the host has Ubuntu's keyring: nothing to point elsewhere
        return
    sources = tmp_path / "etc/apt/sources.list"
    sources.parent.mkdir(parents=True)
    sources.write_text("\n".join(plan.sources.lines) + "\n")
    text = script.text().replace("/etc/apt", f"{tmp_path}/etc/apt")
    subprocess.run([dash, "-s"], input=text.encode(), check=True)
    written = sources.read_text()
    assert str(plan.release.keyring) not in written
    assert written.count("[signed-by=/usr/share/keyrings/ubuntu-archive-keyring.gpg]") == 3


def test_cloud_init_datasources_sort_after_the_package_s_own_file() -> None:
    """cloud-init reads cloud.cfg.d in name order, later wins: ours must follow 90_dpkg.cfg."""
    assert sorted([Path(CONFIG_FILE).name, "90_dpkg.cfg", "05_logging.cfg"])[-1] == Path(CONFIG_FILE).name


# ---- the root filesystem cache -----------------------------------------------------------------


def _inputs(tmp_path: Path, plan: DistroPlan, include: tuple[str, ...] = ("grub-pc",)) -> dict[str, object]:
    work = tmp_path / f"work-{len(list(tmp_path.iterdir()))}"
    work.mkdir()
    selected = [c for c in CUSTOMIZATIONS if c.applies(plan)]
    scripts = _write_scripts(plan, selected, [CustomizationReport(c.name, c.summary) for c in selected], work)
    request = MmdebstrapRequest(
        suite=plan.release.codename, target=work / "rootfs.tar", mode="unshare", variant=plan.variant,
        mirrors=plan.sources.lines, include=include,
    )  # fmt: skip
    return _rootfs_inputs(plan, request, scripts)


@pytest.fixture
def local_archive(tmp_path: Path) -> str:
    """A file:// archive with InRelease files for noble, noble-updates and noble-security."""
    root = tmp_path / "archive"
    for suite in ("noble", "noble-updates", "noble-security"):
        (root / "dists" / suite).mkdir(parents=True)
        (root / "dists" / suite / "InRelease").write_text(f"Suite: {suite}\n")
    return f"file://{root}"


def test_the_key_changes_with_every_input_and_only_with_them(tmp_path: Path, local_archive: str) -> None:
    require_program("mmdebstrap")
    sources = choose_sources(NOBLE, mirror=local_archive)
    plan = _plan(sources=sources)
    first = _inputs(tmp_path, plan)
    again = _inputs(tmp_path, plan)
    # The scripts' here-document markers derive from the content: the same plan, the same key.
    assert rootfs_key(first) == rootfs_key(again)
    assert first["archive"] == {
        f"{local_archive}/dists/noble/InRelease": hashlib.sha256(b"Suite: noble\n").hexdigest()
    }
    assert str(first["mmdebstrap"]).startswith("mmdebstrap ")
    changed = {
        "packages": _inputs(tmp_path, plan, include=("grub-pc", "nginx")),
        "epoch": _inputs(tmp_path, _plan(sources=sources, source_date_epoch=1)),
        "variant": _inputs(tmp_path, _plan(sources=sources, variant="standard")),
        "context": _inputs(tmp_path, _plan(sources=sources, context="agent")),
        "append": _inputs(tmp_path, _plan(sources=sources, append="quiet")),
        "commands": _inputs(tmp_path, _plan(sources=sources, commands=("true",))),
        "release": _inputs(tmp_path, _plan("ubuntu:jammy", sources=sources)),
        "mirror": _inputs(
            tmp_path, _plan(sources=choose_sources(NOBLE, mirror=local_archive + "/"))
        ),  # same URL: same key
    }
    keys = {name: rootfs_key(inputs) for name, inputs in changed.items()}
    assert keys["mirror"] == rootfs_key(first)
    del keys["mirror"]
    assert len(set(keys.values())) == len(keys) and rootfs_key(first) not in keys.values()
    # A new InRelease (a package updated in the archive) is a new key.
    (Path(local_archive.removeprefix("file://")) / "dists/noble/InRelease").write_text("Suite: noble\nX: 1\n")
    assert rootfs_key(_inputs(tmp_path, plan)) != rootfs_key(first)


def test_the_archive_state_of_a_snapshot_is_its_stamp_and_an_unreadable_archive_fails(
    tmp_path: Path,
) -> None:
    snapshot = choose_sources(BOOKWORM, snapshot="20250520T000000Z", mirror="http://snap.example")
    assert archive_state(snapshot) == {"snapshot": "20250520T000000Z"}
    missing = choose_sources(NOBLE, mirror=f"file://{tmp_path}/none")
    with pytest.raises(BuildError, match="could not be read"):
        archive_state(missing)
    assert release_file_url("deb [signed-by=/k a=b] http://m.example/ubuntu/ noble main") == (
        "http://m.example/ubuntu/dists/noble/InRelease"
    )


def test_snapshot_is_refused_for_ubuntu_and_validated() -> None:
    with pytest.raises(InvalidArgumentError, match="imagewright knows only Debian's"):
        choose_sources(NOBLE, snapshot="20250520T000000Z")
    with pytest.raises(InvalidArgumentError, match="is not a snapshot time"):
        choose_sources(BOOKWORM, snapshot="2025-05-20")


def _tarball(path: Path, data: bytes) -> tuple[Path, Path]:
    path.mkdir(parents=True)
    tar, listing = path / "rootfs.tar", path / "packages"
    tar.write_bytes(data)
    listing.write_text("base-files\t13\tinstalled\n")
    return tar, listing


def _key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def test_store_lookup_and_least_recently_used_eviction(tmp_path: Path) -> None:
    cache = RootfsCache(tmp_path / "cache", max_entries=2, max_bytes=10_000)
    assert cache.lookup(_key(1)) is None
    for n in (1, 2):
        tar, listing = _tarball(tmp_path / f"b{n}", bytes([n]) * 1000)
        entry = cache.store(_key(n), tar, listing, {"n": n})
        assert not tar.exists() and entry.tarball.read_bytes() == bytes([n]) * 1000
        os.utime(entry.directory / "manifest.json", (1000 + n, 1000 + n))
    # A second store of a key that is there keeps the entry (another build may be reading it).
    tar, listing = _tarball(tmp_path / "b1-again", b"z" * 1000)
    assert cache.store(_key(1), tar, listing, {"n": 1}).tarball.read_bytes() == bytes([1]) * 1000
    assert not tar.exists()
    manifest = json.loads((tmp_path / "cache/rootfs" / _key(1) / "manifest.json").read_text())
    assert manifest["inputs"] == {"n": 1} and manifest["size"] == 1000
    hit = cache.lookup(_key(1))  # a use: entry 1 is now the most recent
    assert hit is not None and hit.listing.read_text().startswith("base-files")
    tar, listing = _tarball(tmp_path / "b3", b"\3" * 1000)
    cache.store(_key(3), tar, listing, {"n": 3})
    assert sorted(e.key for _, e in cache.entries()) == sorted([_key(1), _key(3)])
    assert not (tmp_path / "cache/rootfs" / _key(2)).exists()
    # The byte bound: an entry that would pass it evicts the older ones, never itself.
    tar, listing = _tarball(tmp_path / "b4", b"\4" * 9500)
    cache.store(_key(4), tar, listing, {"n": 4})
    assert [e.key for _, e in cache.entries()] == [_key(4)]


def test_a_damaged_or_incomplete_entry_is_a_miss_and_is_swept(tmp_path: Path) -> None:
    cache = RootfsCache(tmp_path / "cache")
    tar, listing = _tarball(tmp_path / "b1", b"x" * 100)
    entry = cache.store(_key(1), tar, listing, {})
    with entry.tarball.open("ab") as f:
        f.write(b"more")  # not the size the manifest recorded
    assert cache.lookup(_key(1)) is None
    incomplete = tmp_path / "cache/rootfs" / _key(2)
    incomplete.mkdir()
    (incomplete / "rootfs.tar").write_bytes(b"partial")
    tar, listing = _tarball(tmp_path / "b3", b"y" * 100)
    cache.store(_key(3), tar, listing, {})
    assert not incomplete.exists() and not entry.directory.exists()
    with pytest.raises(ValueError):
        cache.lookup("../../etc")
    with pytest.raises(InvalidArgumentError):
        RootfsCache(tmp_path, max_entries=0)


def test_scripts_repeat_byte_for_byte(tmp_path: Path) -> None:
    plan = _plan()
    selected = [c for c in CUSTOMIZATIONS if c.applies(plan)]
    texts: list[list[tuple[str, str]]] = []
    for n in (1, 2):
        work = tmp_path / str(n)
        work.mkdir()
        reports = [CustomizationReport(c.name, c.summary) for c in selected]
        scripts: _Scripts = _write_scripts(plan, selected, reports, work)
        texts.append(scripts.texts)
    assert texts[0] == texts[1] and any("IMAGEWRIGHT_EOF_" in text for _, text in texts[0])
