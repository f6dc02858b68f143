"""The parts of a distribution build that need no network: releases, sources, the mmdebstrap
command line and its status lines, recipes, the customisation scripts and the kernel hook."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_program

from imagewright.errors import InvalidArgumentError
from imagewright.ops.build.distro.customizations import BY_NAME, CUSTOMIZATIONS, TargetScript
from imagewright.ops.build.distro.customizations.boot_loader import DEVICE_UNIT_TEXT, grub_defaults
from imagewright.ops.build.distro.plan import DistroPlan
from imagewright.ops.build.distro.recipe import load_recipe
from imagewright.ops.build.distro.release import is_release_spec, parse_release
from imagewright.ops.build.distro.sources import (
    AptSource,
    choose_sources,
    parse_deb822,
    parse_one_line,
    parse_snapshot,
)
from imagewright.ops.build.grubcfg import KernelChoice, grub_config
from imagewright.ops.build.kernelhook import hook_script
from imagewright.programs.mmdebstrap import Hook, MmdebstrapRequest, StatusReader, arguments

BOOKWORM = parse_release("debian:bookworm")


# ---- releases ------------------------------------------------------------------------------


def test_release_names() -> None:
    assert parse_release("debian:bookworm").name == "debian:bookworm"
    assert parse_release("debian:unstable").codename == "sid"
    assert parse_release("ubuntu:noble").vendor.name == "ubuntu"
    assert parse_release("debian:bookworm").kernel_package("cloud") == "linux-image-cloud-amd64"
    assert is_release_spec("debian:bookworm") and not is_release_spec("rootfs.tar")
    assert not is_release_spec("./debian:bookworm")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("debian:bookwrm", ["'bookwrm' is not a Debian release", "bookworm"]),
        ("fedora:40", ["is not a release name", "debian or ubuntu"]),
        ("bookworm", ["is not a release name"]),
        ("ubuntu:bookworm", ["not an Ubuntu release"]),
    ],
)
def test_unknown_release_is_one_sentence(text: str, words: list[str]) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_release(text)
    message = str(caught.value)
    assert message.count(". ") == 0 and message.endswith(".")
    for word in words:
        assert word in message


# ---- sources -------------------------------------------------------------------------------

DEB822 = """Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
"""


def test_host_sources_both_formats() -> None:
    found = parse_deb822(DEB822)
    assert [(s.uri, s.suite) for s in found] == [
        ("http://mirror.example/debian", "bookworm"),
        ("http://mirror.example/debian", "bookworm-updates"),
        ("http://mirror.example/debian-security", "bookworm-security"),
    ]
    one_line = parse_one_line(
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib\n"
        "deb-src http://m.example/debian bookworm main\n"
        "deb http://m.example/debian-security bookworm-security main\n"
    )
    assert [(s.uri, s.suite, s.components) for s in one_line] == [
        ("http://m.example/debian", "bookworm", ("main", "contrib")),
        ("http://m.example/debian-security", "bookworm-security", ("main",)),
    ]


def test_sources_from_the_host_mirror_and_snapshot() -> None:
    host = choose_sources(BOOKWORM, host_sources=parse_deb822(DEB822))
    assert host.origin == "host" and host.mirror == "http://mirror.example/debian"
    assert [line.split()[2:4] for line in host.lines] == [
        ["http://mirror.example/debian", "bookworm"],
        ["http://mirror.example/debian", "bookworm-updates"],
        ["http://mirror.example/debian-security", "bookworm-security"],
    ]
    assert all("signed-by=/usr/share/keyrings/debian-archive-keyring.gpg" in line for line in host.lines)
    # A trixie build on a bookworm host still takes the host's archive, with trixie's suites.
    trixie = choose_sources(parse_release("debian:trixie"), host_sources=parse_deb822(DEB822))
    assert [line.split()[3] for line in trixie.lines] == ["trixie", "trixie-updates", "trixie-security"]

    mirror = choose_sources(BOOKWORM, mirror="http://other.example/debian/")
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert mirror.lines == (f"deb [signed-by={keyring}] http://other.example/debian bookworm main",)
    snapshot = choose_sources(BOOKWORM, snapshot="20250520T000000Z", mirror="http://snap.example")
    assert snapshot.mirror == "http://snap.example/archive/debian/20250520T000000Z"
    assert "check-valid-until=no" in snapshot.lines[0]
    assert snapshot.lines[2].split()[3:5] == [
        "http://snap.example/archive/debian-security/20250520T000000Z",
        "bookworm-security",
    ]
    assert (
        choose_sources(BOOKWORM, host_sources=[AptSource("http://x.example/ubuntu", "noble", ())]).lines == ()
    )


@pytest.mark.parametrize("bad", ["2025-05-20", "20250532T000000Z", "20250520T250000Z", "20250520T000000"])
def test_bad_snapshot_time(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is not a snapshot time"):
        parse_snapshot(bad)
    assert parse_snapshot("20250520T000000Z")[1] == 1747699200


def test_bad_mirror_url() -> None:
    with pytest.raises(InvalidArgumentError, match="is not a mirror URL"):
        choose_sources(BOOKWORM, mirror="mirror.example/debian")


# ---- mmdebstrap ----------------------------------------------------------------------------


def test_mmdebstrap_arguments(tmp_path: Path) -> None:
    request = MmdebstrapRequest(
        suite="bookworm", target=tmp_path / "rootfs.tar", mode="unshare", variant="minbase",
        mirrors=("deb http://m.example/debian bookworm main",), include=("grub-pc", "openssh-server"),
        hooks=(Hook("customize", 'chroot "$1" true'),), skip=("essential/unlink",),
    )  # fmt: skip
    argv = arguments(request)
    assert argv[:5] == ["mmdebstrap", "--mode=unshare", "--variant=minbase", "--format=tar", "--verbose"]
    assert "--include=grub-pc,openssh-server" in argv
    assert '--customize-hook=chroot "$1" true' in argv
    assert argv[argv.index("--") :] == [
        "--", "bookworm", str(tmp_path / "rootfs.tar"), "deb http://m.example/debian bookworm main",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        MmdebstrapRequest(suite="bookworm; rm", target=tmp_path, mode="unshare", variant="minbase")


def test_status_lines_give_phases_downloads_and_the_failure() -> None:
    seen: list[str] = []
    reader = StatusReader(lambda phase, done, total: seen.append(phase))
    for line in [
        "I: running apt-get update...",
        "Get:1 http://m.example/debian bookworm InRelease [151 kB]",
        "Hit:2 http://m.example/debian bookworm/main amd64 Packages",
        "Get:3 http://m.example/debian bookworm/main amd64 dash amd64 0.5.12-2 [97.1 kB]",
        "I: extracting archives...",
        "Unpacking dash (0.5.12-2) ...",
        "Setting up dash (0.5.12-2) ...",
        "E: Unable to locate package no-such-package",
        "E: apt-get --yes install failed",
        "E: mmdebstrap failed",
    ]:
        reader.feed(line + "\n")
    assert [p for i, p in enumerate(seen) if i == 0 or seen[i - 1] != p] == ["fetch", "unpack", "configure"]
    assert reader.fetched == [
        "http://m.example/debian",
        "http://m.example/debian",
    ]
    assert reader.packages_fetched == 1
    assert reader.unpacked == 1 and reader.configured == 1
    assert reader.failure_line() == "Unable to locate package no-such-package"


# ---- recipes -------------------------------------------------------------------------------


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.toml"
    path.write_text(text)
    return path


def test_a_recipe_is_read(tmp_path: Path) -> None:
    (tmp_path / "motd").write_text("hello\n")
    recipe = load_recipe(
        _recipe(
            tmp_path,
            'release = "debian:bookworm"\npackages = ["nginx"]\ncontext = "cloud-init"\n'
            'commands = ["systemctl enable nginx"]\noutputs = ["web.qcow2", "web.vmdk"]\n'
            'source_date_epoch = 1700000000\n[disk]\nsize = "3G"\nswap = 268435456\ntable = "gpt"\n'
            'firmware = "uefi"\n'
            '[[files]]\nsource = "motd"\ndestination = "/etc/motd"\nmode = "0600"\n',
        )
    )
    assert recipe.release == "debian:bookworm" and recipe.packages == ("nginx",)
    assert recipe.size == 3 << 30 and recipe.swap == 256 << 20 and recipe.table == "gpt"
    assert recipe.firmware == "uefi" and recipe.overridden(firmware="bios").firmware == "bios"
    assert [o.path.name for o in recipe.outputs()] == ["web.qcow2", "web.vmdk"]
    assert recipe.files[0].source == tmp_path / "motd" and recipe.files[0].mode == 0o600
    over = recipe.overridden(output=tmp_path / "x.raw", packages=("curl,jq",), context="agent")
    assert [o.path.name for o in over.outputs()] == ["x.raw"]
    assert over.packages == ("nginx", "curl", "jq") and over.context == "agent"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('release = "debian:bookworm"\npackages = "nginx"\n', "web.toml: packages must be a list of texts"),
        ('release = "debian:bookworm"\npakages = ["nginx"]\n', "web.toml: pakages is not a recipe field"),
        ('packages = ["nginx"]\n', "web.toml: release is missing"),
        ('release = "debian:bookworm"\n[disk]\nsize = true\n', "web.toml: disk.size must be a size"),
        ('release = "debian:bookworm"\n[disk]\nsize = "lots"\n', "web.toml: disk.size must be a size"),
        ('release = "debian:bookworm"\ncontext = "puppet"\n', "web.toml: context must be one of agent"),
        ('release = "debian:bookworm"\n[disk]\nfirmware = "efi"\n', "web.toml: disk.firmware must be one of"),
        (
            'release = "debian:bookworm"\n[[files]]\nsource = "a"\ndestination = "etc/a"\n',
            "files[1].destination",
        ),
        (
            'release = "debian:bookworm"\n[[files]]\nsource = "a"\ndestination = "/a"\nmode = "999"\n',
            "files[1].mode",
        ),
        (
            'release = "debian:bookworm"\nsource_date_epoch = "now"\n',
            "source_date_epoch must be a whole number",
        ),
        ('release = "debian:bookworm"\npackages = [\n', "web.toml is not valid TOML"),
    ],
)
def test_a_bad_recipe_is_one_sentence_naming_the_field(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        load_recipe(_recipe(tmp_path, text))
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


# ---- customisations ------------------------------------------------------------------------


def _plan(context: str = "agent") -> DistroPlan:
    return DistroPlan(
        release=BOOKWORM, variant="minbase", packages=(), context=context, kernel_flavour="cloud",
        sources=choose_sources(BOOKWORM, mirror="http://m.example/debian"), source_date_epoch=0,
    )  # fmt: skip


def test_every_customisation_is_registered_once_and_documented() -> None:
    names = [c.name for c in CUSTOMIZATIONS]
    assert len(names) == len(set(names)) and names[-1] == "cleanup"
    for custom in CUSTOMIZATIONS:
        assert custom.summary and custom.why
    plan = _plan("cloud-init")
    applied = {c.name for c in CUSTOMIZATIONS if c.applies(plan)}
    assert "cloud-init" in applied and "agent-tools" not in applied
    assert "grub-pc" in BY_NAME["boot-loader"].packages(plan)
    assert BY_NAME["kernel"].packages(plan)[0] == "linux-image-cloud-amd64"


def test_target_scripts_write_files_inside_a_root(tmp_path: Path) -> None:
    """The scripts run under the guest's sh; here under dash with paths moved under a root."""
    dash = require_program("dash")
    root = tmp_path / "root"
    root.mkdir()
    script = TargetScript()
    script.write_file("/etc/x/conf", "a 'quoted' $HOME line\nIMAGEWRIGHT_EOF_ in text\n", mode=0o600)
    script.write_bytes("/etc/bin", bytes(range(256)), mode=0o755)
    script.symlink("/usr/share/zoneinfo/Etc/UTC", "/etc/localtime")
    text = script.text().replace(" /etc", f" {root}/etc").replace(" '/etc", f" '{root}/etc")
    text = text.replace("chown 0:0", "true")
    subprocess.run([dash, "-s"], input=text.encode(), check=True)
    assert (root / "etc/x/conf").read_text() == "a 'quoted' $HOME line\nIMAGEWRIGHT_EOF_ in text\n"
    assert (root / "etc/x/conf").stat().st_mode & 0o777 == 0o600
    assert (root / "etc/bin").read_bytes() == bytes(range(256))
    assert (root / "etc/localtime").readlink() == Path("/usr/share/zoneinfo/Etc/UTC")
    assert script.changes[0] == "wrote /etc/x/conf"


def test_grub_defaults_give_build_s_command_line() -> None:
    text = grub_defaults('quiet "a b"')
    assert 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 quiet a b"' in text
    assert 'GRUB_CMDLINE_LINUX_DEFAULT=""' in text and "GRUB_DISABLE_SUBMENU=y" in text


# ---- the kernel hook of guests without a GRUB package ---------------------------------------


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_kernel_hook_writes_build_s_menu_for_the_newest_kernel(tmp_path: Path, shell: str) -> None:
    program = require_program(shell)
    boot = tmp_path / "boot"
    (boot / "grub").mkdir(parents=True)
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64", "initrd.img-6.1.0-10-amd64"):
        (boot / name).write_bytes(b"x")
    uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    append = "net.ifnames=0 '$x'"
    hook = tmp_path / "zz-imagewright-grub"
    hook.write_text(hook_script(uuid, append))
    argv = [program, "sh", str(hook)] if shell == "busybox" else [program, str(hook)]
    env = {"IMAGEWRIGHT_BOOT_DIR": str(boot), "PATH": "/usr/bin:/bin"}
    subprocess.run(argv, check=True, env=env)
    written = (boot / "grub" / "grub.cfg").read_text()
    expected = grub_config(
        KernelChoice(
            "/boot/vmlinuz-6.1.0-10-amd64", "/boot/initrd.img-6.1.0-10-amd64", "6.1.0-10-amd64", "x"
        ),
        uuid,
        append,
    )
    # The same menu, line for line, but for the first (comment) line.
    assert written.splitlines()[1:] == expected.splitlines()[1:]
    assert not list((boot / "grub").glob("*.imagewright-new"))


def test_the_first_boot_grub_unit_runs_in_the_idle_classes() -> None:
    """It is bookkeeping: on a one-vCPU instance it must not take CPU from cloud-init's stages."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(DEVICE_UNIT_TEXT)
    assert unit["Service"]["CPUSchedulingPolicy"] == "idle"
    assert unit["Service"]["IOSchedulingClass"] == "idle"
    assert unit["Service"]["Type"] == "oneshot" and unit["Install"]["WantedBy"] == "multi-user.target"
