"""Interrupting a resize: Ctrl-C (SIGINT) of imagewright, or SIGKILL of its qemu-img child,
leaves the image byte for byte as it was and no temporary file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img, run, sparse_file
from tests.ops.resize_fixtures import MiB, sha256, stray_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def slow_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1 GiB GPT disk holding 768 MiB of random data, as raw and as vdi (slow to convert)."""
    directory = tmp_path_factory.mktemp("resize-slow")
    raw = sparse_file(directory / "source.img", 1024 * MiB)
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", raw, input=b"label: gpt\n,\n")
    with raw.open("r+b") as f:
        f.seek(MiB)
        for _ in range(48):
            f.write(os.urandom(16 * MiB))
    vdi = directory / "source.vdi"
    qemu_img("convert", "-f", "raw", "-O", "vdi", raw, vdi)
    return {"raw": raw, "vdi": vdi}


def start(image: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "imagewright.cli.main", "resize", str(image), "+1G"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("the condition was not reached in time")
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:  # it ended meanwhile
        pass
    return found


def descendants(pid: int) -> list[int]:
    """Children, grandchildren ...: qemu-img runs inside bubblewrap, two processes down."""
    found = children(pid)
    for child in list(found):
        found.extend(descendants(child))
    return found


def command_line(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def program_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("fmt", ["raw", "vdi"])
def test_sigint_leaves_the_image_untouched(slow_images: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    image = tmp_path / f"disk.{fmt}"
    run("cp", "--sparse=always", slow_images[fmt], image)
    digest = sha256(image)
    proc = start(image)
    wait_for(lambda: bool(stray_files(tmp_path)))
    time.sleep(0.2)
    assert proc.poll() is None, "the resize finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert b"interrupted" in stderr
    assert sha256(image) == digest
    assert stray_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [image.name]


def test_killing_qemu_img_leaves_the_image_untouched(slow_images: dict[str, Path], tmp_path: Path) -> None:
    image = tmp_path / "disk.vdi"
    run("cp", "--sparse=always", slow_images["vdi"], image)
    digest = sha256(image)
    proc = start(image)

    def converting(child: int) -> bool:
        return program_name(child) == "qemu-img" and b"convert" in command_line(child)

    # The first qemu-img runs are `info`/`check`; wait for the long `convert`.
    wait_for(lambda: bool(stray_files(tmp_path)) and any(converting(c) for c in descendants(proc.pid)))
    for child in descendants(proc.pid):
        if converting(child):
            os.kill(child, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stderr
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "killed by signal 9" in lines[0], stderr
    assert sha256(image) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [image.name]


def test_temp_files_of_a_killed_run_are_removed_by_the_next(tmp_path: Path) -> None:
    image = sparse_file(tmp_path / "disk.img", 16 * MiB)
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", image, input=b"label: dos\n,\n")
    # A leftover of a process that no longer exists (PID 2^22 + 1 is above the kernel's pid_max).
    stale = tmp_path / f".disk.img.iw-{2**22 + 1}-deadbeef.raw"
    stale.write_bytes(b"x")
    subprocess.run([sys.executable, "-m", "imagewright.cli.main", "resize", str(image), "+1M"], check=True)
    assert not stale.exists()
    assert stray_files(tmp_path) == []
