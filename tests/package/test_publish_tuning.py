"""``publish`` boot-tunes by default (issue 12): every output holds the guest as ``prepare
--boot-tuning`` leaves it, the source is never written, ``--no-boot-tuning`` publishes the
source's bytes, and a source with nothing to tune is published with the reason.

Read back by readers that are not imagewright's: qemu-img/gzip/tar to get each output's raw
disk, debugfs for the tuned files (compared with a copy ``prepare`` tuned), e2fsck for the
filesystem, sha256 for the source."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from tests.fixtures.tools import run, sfdisk, sparse_file
from tests.guest.images import GuestImage, flat_ext4, write
from tests.package.helpers import MiB, make_disk, pass_reads, sha256_file
from tests.package.tuned_guests import TUNED, DebianShaped, debian_shaped, output_as_raw, tuned_files

from imagewright.compute.boot import boot
from imagewright.compute.testguest import TestGuest
from imagewright.direct_io import read_digests
from imagewright.package import publish as publish_module
from imagewright.programs.runner import record_invocations

pytestmark = pytest.mark.integration

TARGETS = "qcow2,raw.gz,ova,vmdk,raw"
#: One file per target of TARGETS.
OUTPUTS = ["tuned.qcow2", "tuned.raw.gz", "tuned.ova", "tuned.vmdk", "tuned.raw"]


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> DebianShaped:
    return debian_shaped(tmp_path_factory.mktemp("debian-shaped"))


def publish_json(run_cli: object, *args: object) -> dict[str, object]:
    result: Result = run_cli(["publish", *args, "--json"])  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def fingerprint(path: Path) -> tuple[str, int, int]:
    info = path.stat()
    return sha256_file(path), info.st_size, info.st_mtime_ns


@pytest.mark.parametrize("kind", ["qcow2", "raw", "raw.gz"])
def test_every_output_holds_the_tuned_guest_and_the_source_is_never_written(
    kind: str, debian: DebianShaped, tmp_path: Path, run_cli: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = {"qcow2": debian.qcow2, "raw": debian.raw, "raw.gz": debian.gz}[kind]
    before = fingerprint(source)
    out = tmp_path / "out"
    out.mkdir()
    read_back: list[str] = []
    monkeypatch.setattr(
        publish_module,
        "read_digests",
        lambda path, *args: read_back.append(Path(path).name) or read_digests(path, *args),
    )
    with record_invocations() as log:
        report = publish_json(
            run_cli, source, "--to", TARGETS, "-d", out, "--name", "tuned", "--os", "debian64"
        )

    assert fingerprint(source) == before
    # The pass reads the tuned raw copy, whose data extents plan the qcow2's layout: it is
    # hashed as written. Only the OVA is read back for its checksum (and the bundle manifest).
    assert not [name for name in read_back if "qcow2" in name], read_back
    # The source is read once: by the copy the tuning edits (qemu-img for a qcow2; a sparse
    # copy in Python for a raw disk; the decompressed stream for a raw.gz) — never written.
    readers = [argv for argv in log.argvs if str(source) in argv]
    assert len(readers) == (1 if kind == "qcow2" else 0), readers
    if kind == "qcow2":
        (copy,) = readers
        assert copy[0].endswith("qemu-img") and copy[1] == "convert"
        assert copy[copy.index("-f") + 1] == "qcow2" and copy[copy.index("-O") + 1] == "raw"

    tuning = report["tuning"]
    assert isinstance(tuning, dict) and tuning["applied"] is True
    assert tuning["datasource"] == "nocloud,configdrive,ec2" and tuning["note"] == ""
    (operation,) = tuning["operations"]
    assert operation["name"] == "boot-tuning"
    assert {c["path"]: c["action"] for c in operation["changes"]} == TUNED
    assert report["source_format"] == ("qcow2" if kind == "qcow2" else "raw")

    assert sorted(p.name for p in out.iterdir()) == sorted(["SHA256SUMS", *OUTPUTS])
    expected = tuned_files(debian.reference)
    cloud = yaml.safe_load(expected["/etc/cloud/cloud.cfg.d/99_imagewright_datasource.cfg"])
    assert cloud["datasource_list"] == ["NoCloud", "ConfigDrive", "Ec2", "None"]
    with debian.raw.open("rb") as f:
        head = f.read(debian.root_offset)
    for name in OUTPUTS:
        raw = output_as_raw(out / name, tmp_path)
        guest = GuestImage(raw, debian.root_offset)
        assert tuned_files(guest) == expected, name
        run("e2fsck", "-fn", guest.device)  # fails the test on any error it finds
        # Outside the root filesystem nothing changed: partition table, /boot, the GPT backup.
        with raw.open("rb") as f:
            assert f.read(debian.root_offset) == head, name
            f.seek(-33 * 512, os.SEEK_END)
            tail = f.read()
        with debian.raw.open("rb") as f:
            f.seek(-33 * 512, os.SEEK_END)
            assert tail == f.read(), name
    # No scratch copy is left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted(["SHA256SUMS", *OUTPUTS])
    assert not [p for p in source.parent.iterdir() if ".iw-" in p.name]


def test_no_boot_tuning_publishes_the_source_bytes_from_one_read(
    debian: DebianShaped, tmp_path: Path, run_cli: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with record_invocations() as log, pass_reads(monkeypatch) as reads:
        report = publish_json(
            run_cli, debian.qcow2, "--to", "qcow2,raw", "-d", out, "--name", "plain", "--no-boot-tuning"
        )
    assert report["tuning"] is None
    # the pass reads the source once (its own qcow2 guest view); no program runs on it
    assert reads == [str(debian.qcow2)]
    assert [argv for argv in log.argvs if "qemu-img" in argv[0]] == []
    assert not [argv for argv in log.argvs if Path(argv[0]).name in ("debugfs", "e2fsck")]
    assert sha256_file(out / "plain.raw") == sha256_file(debian.raw)
    result: Result = run_cli(  # type: ignore[operator]
        ["publish", debian.qcow2, "--to", "raw", "-d", out, "--name", "plain", "--no-boot-tuning", "--force"]
    )
    assert result.exit_code == 0, result.output
    assert "boot-tuning: off (--no-boot-tuning)" in result.stdout


def test_a_source_without_a_linux_root_is_published_as_it_is_with_the_reason(
    tmp_path: Path, run_cli: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No filesystem at all: decided from the gate's report, nothing is copied.
    blank = make_disk(tmp_path / "blank.qcow2", 16 * MiB, [(0, 8192, 0x51)], fmt="qcow2")
    out = tmp_path / "out"
    out.mkdir()
    with record_invocations() as log, pass_reads(monkeypatch) as reads:
        report = publish_json(run_cli, blank, "--to", "raw", "-d", out)
    assert report["tuning"] == {
        "datasource": "nocloud,configdrive,ec2",
        "applied": False,
        "note": "the image holds no filesystem imagewright recognises",
        "filesystem": "",
        "changes": 0,
        "seconds": report["tuning"]["seconds"],  # type: ignore[index]
        "operations": [],
    }
    assert reads == [str(blank)]  # the pass only, on the source itself
    assert [argv for argv in log.argvs if "qemu-img" in argv[0]] == []

    # A FAT partition only (a data disk, an ESP alone): no Linux filesystem, nothing copied.
    fat = tmp_path / "fat.raw"
    sparse_file(fat, 40 * MiB)
    sfdisk(fat, "label: dos\nstart=2048, type=c\n")
    run("mkfs.vfat", "--offset", "2048", fat, str((40 * MiB - MiB) // 1024))
    with record_invocations() as log:
        report = publish_json(run_cli, fat, "--to", "qcow2", "-d", out)
    assert report["tuning"]["note"] == "the image holds no Linux filesystem (only vfat)"  # type: ignore[index]
    assert not [argv for argv in log.argvs if Path(argv[0]).name in ("debugfs", "e2fsck", "dumpe2fs")]

    # An ext4 filesystem that is not a root (no /etc): found out on the copy, before any write.
    tree = tmp_path / "data"
    write(tree, "srv/data.txt", "payload\n")
    data = flat_ext4(tree, tmp_path / "data.raw", size_mib=8)
    before = sha256_file(data.path)
    result: Result = run_cli(["publish", data.path, "--to", "raw", "-d", out, "--name", "data"])  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    assert (
        "boot-tuning: skipped, the filesystem of the whole disk (ext4) of data.raw has no /etc; it does "
        "not look like a Linux root filesystem; the outputs hold the source's guest as it is"
    ) in " ".join(result.stdout.split())
    assert sha256_file(out / "data.raw") == before == sha256_file(data.path)


def test_datasource_is_prepare_s_option_and_goes_with_boot_tuning(
    debian: DebianShaped, tmp_path: Path, run_cli: object
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    report = publish_json(run_cli, debian.qcow2, "--to", "raw", "-d", out, "--datasource", "ec2")
    raw = out / "debian.raw"
    pinned = tuned_files(GuestImage(raw, debian.root_offset))
    assert yaml.safe_load(pinned["/etc/cloud/cloud.cfg.d/99_imagewright_datasource.cfg"]) == {
        "datasource_list": ["Ec2", "None"],
        "datasource": {"Ec2": {"strict_id": False}},
    }
    assert report["tuning"]["datasource"] == "ec2"  # type: ignore[index]

    refused: Result = run_cli(  # type: ignore[operator]
        [
            "publish",
            debian.qcow2,
            "--to",
            "raw",
            "-d",
            out,
            "--force",
            "--no-boot-tuning",
            "--datasource",
            "ec2",
        ]
    )
    assert refused.exit_code == 2 and "--datasource goes with --boot-tuning." in refused.output
    unknown: Result = run_cli(  # type: ignore[operator]
        ["publish", debian.qcow2, "--to", "raw", "-d", out, "--force", "--datasource", "ec2,gce"]
    )
    assert unknown.exit_code == 1
    assert "'gce' is not a datasource; use one of ec2, nocloud, configdrive, opennebula" in unknown.output
    twice: Result = run_cli(  # type: ignore[operator]
        ["publish", debian.qcow2, "--to", "raw", "-d", out, "--force", "--datasource", "ec2,ec2"]
    )
    assert twice.exit_code == 1 and "--datasource names a datasource twice" in twice.output
    assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "debian.raw"]  # nothing else made

    # prepare takes the same list
    copy = tmp_path / "copy.raw"
    copy.write_bytes(debian.raw.read_bytes())
    prepared: Result = run_cli(  # type: ignore[operator]
        ["prepare", copy, "--operations", "boot-tuning", "--boot-tuning", "--datasource", "configdrive,ec2"]
    )
    assert prepared.exit_code == 0, prepared.output
    listed = tuned_files(GuestImage(copy, debian.root_offset))
    config = yaml.safe_load(listed["/etc/cloud/cloud.cfg.d/99_imagewright_datasource.cfg"])
    assert config["datasource_list"] == ["ConfigDrive", "Ec2", "None"]


@pytest.mark.slow
def test_the_test_guest_built_then_published_is_tuned_and_boots(
    testguest_rootfs: TestGuest, testguest_tarball: Path, tmp_path: Path, run_cli: object
) -> None:
    """A build output (GPT, GRUB 2, the test guest): its menu timeout (build's 1 s) becomes 0 in
    the published qcow2, which boots through its own GRUB to the guest's marker."""
    disk = tmp_path / "disk.qcow2"
    built: Result = run_cli(  # type: ignore[operator]
        ["build", "--from", testguest_tarball, "-o", disk, "--size", "160M", "--table", "gpt"]
    )
    assert built.exit_code == 0, built.output
    before = sha256_file(disk)
    out = tmp_path / "out"
    out.mkdir()
    report = publish_json(run_cli, disk, "--to", "qcow2", "-d", out, "--name", "published")
    assert sha256_file(disk) == before
    (operation,) = report["tuning"]["operations"]  # type: ignore[index]
    assert [(c["path"], c["detail"]) for c in operation["changes"]] == [
        ("/boot/grub/grub.cfg", "menu timeout 0")
    ]
    shown: Result = run_cli(["cat", f"{out / 'published.qcow2'}:/boot/grub/grub.cfg"])  # type: ignore[operator]
    assert shown.exit_code == 0 and "set timeout=0\n" in shown.stdout and "set timeout=1" not in shown.stdout
    result = boot(
        out / "published.qcow2", format="qcow2", timeout=180, expect=testguest_rootfs.marker,
        snapshot=True, console_log=tmp_path / "console.log",
    )  # fmt: skip
    assert result.matched, "\n".join(result.last_lines)
