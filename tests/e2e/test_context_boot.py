"""End to end, through the installed `imagewright` command as a user types it (scripts/demo.py):

    test guest rootfs tarball → build a GPT disk → prepare --agent → a context medium of each kind
    → boot it under QEMU → the agent's ready line → read back what the agent wrote, without mounting.

The disk is built and prepared once per module (per xdist worker) and copied for every kind, so
each boot sees a pristine never-booted image.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import require_program

IMAGEWRIGHT = str(Path(sys.executable).parent / "imagewright")
#: Under TCG the test guest reaches the agent in well under a minute; 180 s leaves headroom
#: for a loaded 2-core machine running two boots at once.
BOOT_TIMEOUT = "180"
USERDATA_OUTPUT = "/root/userdata-ran"


def imagewright(*args: str | Path, cwd: Path) -> str:
    """Run the CLI; fail the test with its whole output when it exits non-zero."""
    proc = subprocess.run(
        [IMAGEWRIGHT, *(str(a) for a in args)], cwd=cwd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"imagewright {' '.join(str(a) for a in args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


@pytest.fixture(scope="module")
def prepared_disk(testguest_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bootable GPT disk of the test guest with the agent installed, never booted."""
    work = tmp_path_factory.mktemp("e2e-disk")
    disk = work / "disk.qcow2"
    imagewright("build", "--from", testguest_tarball, "-o", disk, "--size", "1G", "--table", "gpt", cwd=work)
    imagewright("prepare", disk, "--agent", cwd=work)
    return disk


@pytest.fixture(scope="module")
def ssh_public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keygen = require_program("ssh-keygen")
    work = tmp_path_factory.mktemp("e2e-key")
    key = work / "id_e2e"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", "e2e@imagewright", "-f", str(key)], check=True
    )
    return key.with_suffix(".pub")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nocloud", "configdrive", "opennebula", "wakame"])
def test_context_reaches_the_booted_guest(
    kind: str, prepared_disk: Path, ssh_public_key: Path, tmp_path: Path
) -> None:
    instance_id = f"i-e2e-{kind}"
    hostname = f"e2e-{kind}"
    disk = tmp_path / "disk.qcow2"
    # A copy per kind: each boot must be a first boot (a new instance), untouched by the others.
    subprocess.run(["cp", "--sparse=always", str(prepared_disk), str(disk)], check=True)

    # The instance id is written into the script rather than read from the environment, so the
    # output file proves this very seed's user-data ran (not a leftover of another instance).
    userdata = tmp_path / "script.sh"
    userdata.write_text(f"#!/bin/sh\necho ran-{instance_id} > {USERDATA_OUTPUT}\n")

    # wakame's medium is a VFAT disk attached as a drive; the others are ISO 9660 CD-ROMs.
    seed = tmp_path / ("seed.img" if kind == "wakame" else "seed.iso")
    imagewright(
        "context", "build", "--kind", kind, "--instance-id", instance_id, "--hostname", hostname,
        "--ssh-key", ssh_public_key, "--user-data", userdata, "-o", seed, cwd=tmp_path,
    )  # fmt: skip
    assert seed.is_file()

    attach = ["--drive", seed] if kind == "wakame" else ["--cdrom", seed]
    # source= proves the agent took the data from the medium of this kind, not another source.
    expect = f"imagewright-agent: ready instance-id={instance_id} hostname={hostname} source={kind}"
    imagewright("boot", disk, *attach, "--expect", expect, "--timeout", BOOT_TIMEOUT, cwd=tmp_path)

    assert imagewright("cat", f"{disk}:/etc/hostname", cwd=tmp_path).strip() == hostname
    key_line = ssh_public_key.read_text().strip()
    authorized = imagewright("cat", f"{disk}:/root/.ssh/authorized_keys", cwd=tmp_path)
    assert key_line in authorized.splitlines()
    assert imagewright("cat", f"{disk}:{USERDATA_OUTPUT}", cwd=tmp_path).strip() == f"ran-{instance_id}"
    status_file = f"/var/lib/imagewright-agent/{instance_id}/user-data.status"
    status = imagewright("cat", f"{disk}:{status_file}", cwd=tmp_path)
    assert status.strip() == "0"


def _nocloud_seed(instance_id: str, hostname: str, userdata: Path, out: Path, cwd: Path) -> Path:
    imagewright(
        "context", "build", "--kind", "nocloud", "--instance-id", instance_id,
        "--hostname", hostname, "--user-data", userdata, "-o", out, cwd=cwd,
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_second_boot_keeps_the_instance_and_a_new_id_reruns_user_data(
    prepared_disk: Path, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["cp", "--sparse=always", str(prepared_disk), str(disk)], check=True)

    # Appending (not overwriting) makes every run of the user-data countable afterwards.
    runs = "/root/runs"
    userdata = tmp_path / "script.sh"
    userdata.write_text(f"#!/bin/sh\necho ran >> {runs}\n")

    seed_a = _nocloud_seed("i-a", "first", userdata, tmp_path / "seed-a.iso", tmp_path)
    expect_a = "imagewright-agent: ready instance-id=i-a hostname=first source=nocloud"
    for _ in range(2):
        imagewright(
            "boot", disk, "--cdrom", seed_a, "--expect", expect_a, "--timeout", BOOT_TIMEOUT, cwd=tmp_path
        )
    # Two boots of the same instance: user-data is a once-per-instance action.
    assert imagewright("cat", f"{disk}:{runs}", cwd=tmp_path).splitlines() == ["ran"]

    # A new instance id on the same disk is a new instance: user-data runs again, the hostname moves.
    seed_b = _nocloud_seed("i-b", "other", userdata, tmp_path / "seed-b.iso", tmp_path)
    expect_b = "imagewright-agent: ready instance-id=i-b hostname=other source=nocloud"
    imagewright(
        "boot", disk, "--cdrom", seed_b, "--expect", expect_b, "--timeout", BOOT_TIMEOUT, cwd=tmp_path
    )
    assert imagewright("cat", f"{disk}:{runs}", cwd=tmp_path).splitlines() == ["ran", "ran"]
    assert imagewright("cat", f"{disk}:/etc/hostname", cwd=tmp_path).strip() == "other"
