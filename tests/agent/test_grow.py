"""Growing the root partition and filesystem, against a real partitioned disk image.

The sandbox's /dev/vda is a disk image made by sfdisk; a fake sysfs and mountinfo describe it
the way the kernel would (root on vda1, 10 MiB of a 40 MiB disk). In dry-run the agent names
the commands it would run; without dry-run its sfdisk call really grows the partition in the
image file, checked with sfdisk --json.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.agent.sandbox import SHELLS, Sandbox, host_path, lib_call
from tests.fixtures.tools import sfdisk, sfdisk_json, sparse_file, which

MIB = 1024 * 1024
#: no metadata service to wait for: these tests are about the disk
CONF = "SOURCES=nocloud\nHOST_KEYS=missing\n"
SECTORS = 40 * MIB // 512


def make_disk(
    box: Sandbox, label: str, partitions: list[tuple[int, int]], disk_sectors: int = SECTORS
) -> Path:
    """dev/vda with the given (start, size) partitions, and the sysfs the kernel would show."""
    (box.root / "dev").mkdir(exist_ok=True)
    disk = sparse_file(box.root / "dev/vda", disk_sectors * 512)
    script = f"label: {label}\n" + "".join(f"start={s}, size={n}\n" for s, n in partitions)
    sfdisk(disk, script)
    block = box.root / "sys/devices/pci0000:00/virtio1/block/vda"
    block.mkdir(parents=True)
    (block / "size").write_text(f"{disk_sectors}\n")
    by_number = box.root / "sys/dev/block"
    by_number.mkdir(parents=True)
    for number, (start, size) in enumerate(partitions, start=1):
        part = block / f"vda{number}"
        part.mkdir()
        (part / "partition").write_text(f"{number}\n")
        (part / "start").write_text(f"{start}\n")
        (part / "size").write_text(f"{size}\n")
        (by_number / f"254:{number}").symlink_to(os.path.relpath(part, by_number))
    return disk


def mount_root(box: Sandbox, number: int, fstype: str = "ext4") -> None:
    box.write(
        "proc/self/mountinfo",
        f"22 1 254:{number} / / rw,relatime shared:1 - {fstype} /dev/vda{number} rw,errors=remount-ro\n"
        "23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n",
    )


def toolset(tmp_path: Path, busybox_tools: Path, extra: list[str]) -> Path:
    """busybox applets plus some host programs: the test guest's toolset."""
    directory = tmp_path / "guest-tools"
    directory.mkdir()
    for applet in busybox_tools.iterdir():
        (directory / applet.name).symlink_to(os.readlink(applet))
    for program in extra:
        target = directory / program
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(which(program))
    return directory


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_dry_run_names_the_grow_commands(
    shell: str, label: str, make_sandbox: Callable[..., Sandbox]
) -> None:
    box = make_sandbox(conf=CONF)
    make_disk(box, label, [(2048, 20480)])
    mount_root(box, 1)

    run = box.run(shell, toolset="host")

    dev = box.root / "dev"
    assert f"grow: vda has {(SECTORS - 22528) // 2048} MiB free behind partition 1" in run.messages
    # (busybox sh finds its own applets, udhcpc included, whatever PATH says: ignore DHCP here)
    assert [c for c in run.dry_run if c.startswith(("printf", "partx", "resize2fs"))] == [
        f"printf ',+' | sfdisk --no-reread --no-tell-kernel -N 1 {dev}/vda",
        f"partx --update --nr 1 {dev}/vda",
        f"resize2fs {dev}/vda1",
    ]
    assert run.ready.source == "none"


def test_test_guest_toolset_without_partx(
    make_sandbox: Callable[..., Sandbox], busybox_tools: Path, tmp_path: Path
) -> None:
    box = make_sandbox(conf=CONF)
    make_disk(box, "dos", [(2048, 20480)])
    mount_root(box, 1)
    tools = toolset(tmp_path, busybox_tools, ["sfdisk", "resize2fs"])

    run = box.run("busybox", env={"PATH": str(tools)})

    dev = box.root / "dev"
    assert f"printf ',+' | sfdisk --no-reread --no-tell-kernel -N 1 {dev}/vda" in run.dry_run
    assert (
        "grow: neither partx nor resizepart could update the running kernel; the new size is seen "
        "after the next reboot, and the filesystem grows then"
    ) in run.messages
    assert f"resize2fs {dev}/vda1" in run.dry_run


def test_busybox_alone_skips_cleanly(make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(conf=CONF)
    make_disk(box, "dos", [(2048, 20480)])
    mount_root(box, 1)

    run = box.run("busybox")

    assert "grow: neither growpart nor sfdisk is installed; partition not grown" in run.messages
    assert "grow: resize2fs is not installed; filesystem not resized" in run.messages
    assert run.returncode == 0 and run.ready.source == "none"


@pytest.mark.parametrize("shell", SHELLS)
def test_nothing_to_grow(shell: str, make_sandbox: Callable[..., Sandbox]) -> None:
    full = make_sandbox(conf=CONF)
    make_disk(full, "dos", [(2048, SECTORS - 2048)])
    mount_root(full, 1)
    run = full.run(shell, toolset="host")
    assert "grow: vda1 already fills vda" in run.messages
    assert not any("sfdisk" in c for c in run.dry_run)
    assert f"resize2fs {full.root}/dev/vda1" in run.dry_run

    first_of_two = make_sandbox(conf=CONF)
    make_disk(first_of_two, "gpt", [(2048, 20480), (40960, 20480)])
    mount_root(first_of_two, 1)
    run = first_of_two.run(shell, toolset="host")
    assert "grow: vda1 is not the last partition of vda; only the filesystem is resized" in run.messages
    assert not any("sfdisk" in c for c in run.dry_run)

    disabled = make_sandbox(conf=CONF + "GROW_ROOT=no\n")
    make_disk(disabled, "dos", [(2048, 20480)])
    mount_root(disabled, 1)
    run = disabled.run(shell, toolset="host")
    assert "grow: disabled in agent.conf" in run.messages
    assert not any("resize2fs" in c or "sfdisk" in c for c in run.dry_run)

    other = make_sandbox(conf=CONF)
    mount_root(other, 7, "overlay")
    run = other.run(shell, toolset="host")
    assert (
        "grow: the root filesystem (overlay on /dev/vda7) is not on a block device; skipped" in run.messages
    )


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_sfdisk_really_grows_the_partition(
    shell: str, label: str, make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    box = make_sandbox(conf=CONF)
    disk = make_disk(box, label, [(2048, 20480)])
    mount_root(box, 1)
    work = tmp_path / "work"
    work.mkdir()

    # only grow_root, for real, on the image file: partx and resize2fs fail on a plain file,
    # which the agent must log and survive
    result = lib_call(
        shell, box.script, "CONF_GROW_ROOT=yes; grow_root; echo rc=$?", root=box.root, dryrun=False, work=work
    )

    assert result.stdout.strip().endswith("rc=0"), result.stdout + result.stderr
    table = sfdisk_json(disk)
    (part,) = table["partitions"]
    assert part["start"] == 2048
    if label == "dos":
        assert part["start"] + part["size"] == SECTORS
    else:
        assert table["lastlba"] == SECTORS - 34  # the backup GPT moved to the new end
        assert part["start"] + part["size"] - 1 == table["lastlba"]
    assert "grow: partx" not in result.stdout
    assert f"grow: resizing the ext4 filesystem on {box.root}/dev/vda1" in result.stdout


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_growpart_is_preferred_when_installed(shell: str, make_sandbox: Callable[..., Sandbox]) -> None:
    box = make_sandbox(conf=CONF)
    make_disk(box, "gpt", [(2048, 20480)])
    mount_root(box, 1)

    run = box.run(shell, env={"PATH": host_path(growpart=True)})

    dev = box.root / "dev"
    assert f"growpart {dev}/vda 1" in run.dry_run
    assert not any(c.startswith(("printf", "partx")) for c in run.dry_run)
    assert f"resize2fs {dev}/vda1" in run.dry_run
