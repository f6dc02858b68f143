"""verify of a real distribution: Debian 12 with cloud-init, openssh-server and linux-image-amd64
(TCG boots: long tier).

One disk for both runs: ``build --from debian:bookworm --cloud-init --kernel generic`` (the
root filesystem tarball comes from build's own cache, ``ops/build/distro/cache.py``, so only a
machine's first run pays for mmdebstrap), prepared with ``--boot-tuning`` and no datasource pin
(build's list names both NoCloud and Ec2; ds-identify picks the one present). ``verify`` boots
it from a file through the metadata service (EC2 datasource, IMDSv2 tokens required) and then
through a NoCloud seed; every check must pass, including the SSH login with the run's key.
Independently of verify's own checks, the kept instances are read here: cloud-init's final
console line names the datasource it used, the metadata service's access log shows this
instance's token flow, and the host key ssh met (the instance's known_hosts) is the one in the
instance's disk, not the image's (which has none).

Cost on this machine (2 cores, TCG): the first run on a machine builds the rootfs with
mmdebstrap (11.5 min at load 15-19: cache wait 141 s, unpack 133 s, configure 252 s, pack 64 s,
image 88 s); later runs hit the rootfs cache (fixture setup 157 s at load ~20: image + prepare).
Each verify is one TCG boot of Debian to cloud-init's end plus an SSH login: 6-15 min at load
18-30 (a quiet machine: the boot is 35-60 s). The rootfs cache keeps 4 entries (LRU): on a
machine where other builds run, the entry can be evicted and the next run is cold again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.fixtures.debian_guest import RELEASE, SOURCE_DATE_EPOCH, DebianGuest, debian_mirror
from tests.fixtures.metadata_service import MetadataStack
from tests.fixtures.tools import run
from tests.launch.conftest import iw, ps
from tests.launch.test_verify import CHECKS as AGENT_CHECKS

from imagewright.ops.build.distro import build_distribution
from imagewright.ops.prepare import PrepareOptions, prepare

pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(5400)]

#: A Debian with systemd + cloud-init reaches login in 35-60 s under TCG on a quiet machine;
#: at load 30 (other helpers' TCG guests) the NoCloud boot had not shown its login prompt at 900 s.
VERIFY_TIMEOUT = "1500"
DISK_SIZE = 2 << 30
#: verify's checks of the test guest, with those of an image with cloud-init and an SSH server.
CHECKS = [*AGENT_CHECKS[:2], "cloud-init", "ssh login", *AGENT_CHECKS[2:]]
#: Debian's cloud.cfg gives the keys to this user (root is refused: disable_root).
DEFAULT_USER = "debian"


@pytest.fixture(scope="module")
def debian_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    disk = tmp_path_factory.mktemp("debian-verify") / "debian.qcow2"
    report = build_distribution(
        RELEASE, disk, context="cloud-init", kernel="generic", mirror=debian_mirror(),
        source_date_epoch=SOURCE_DATE_EPOCH, size=DISK_SIZE, force=True,
    )  # fmt: skip
    assert report.rootfs_cache in ("hit", "stored"), report.rootfs_cache
    packages = {
        line.split("\t")[0].split(":")[0] for line in Path(f"{disk}.packages").read_text().splitlines()
    }
    assert {"cloud-init", "openssh-server", "linux-image-amd64"} <= packages
    prepared = prepare(disk, options=PrepareOptions(boot_tuning=True))
    tuning = next(op for op in prepared.operations if op.name == "boot-tuning")
    assert "/boot/grub/grub.cfg" in {change.path for change in tuning.changes}
    return disk


def _verify(stack: MetadataStack, disk: Path, *context: str) -> dict[str, object]:
    result = stack.server.imagewright(
        "verify", str(disk), *context, "--timeout", VERIFY_TIMEOUT, "--keep", "--json", check=False,
        timeout=float(VERIFY_TIMEOUT) + 300,
    )  # fmt: skip
    report: dict[str, object] = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"] is True, result.stdout + result.stderr
    return report


def _checks(report: dict[str, object], datasource: str) -> dict[str, dict[str, object]]:
    checks = report["checks"]
    assert isinstance(checks, list)
    assert [c["name"] for c in checks] == CHECKS
    assert all(c["ok"] for c in checks), checks
    named = {c["name"]: c for c in checks}
    hostname = report["hostname"]
    assert named["console"]["detail"] == "login prompt"
    assert str(named["cloud-init"]["detail"]).endswith(f" finished (datasource {datasource})")
    assert named["ssh login"]["detail"] == (
        f"{DEFAULT_USER}@127.0.0.1:{str(named['ssh login']['detail']).split(':')[1].split()[0]} "
        f"with the given key; /etc/hostname is '{hostname}'"
    )
    assert named["hostname"]["detail"] == f"/etc/hostname is '{hostname}'"
    # cloud-init writes the key for the default user, and for root behind a "login as debian" command
    assert f"/home/{DEFAULT_USER}/.ssh/authorized_keys" in str(named["ssh key"]["detail"])
    assert named["user-data"]["detail"] == "ran 1 time(s)"
    assert "ssh_host_ed25519_key.pub" in str(named["ssh host keys"]["detail"])
    return named


def _kept(stack: MetadataStack, report: dict[str, object], disk: Path, tmp_path: Path) -> tuple[str, Path]:
    """The kept instance's console log, and its disk flattened by qemu-img (chain named)."""
    instance = stack.server.data_dir / "instances" / str(report["instance_id"])
    flat = tmp_path / f"{report['instance_id']}.raw"
    run("qemu-img", "convert", "--image-opts",
        f"driver=qcow2,file.filename={instance / 'disk.qcow2'},backing.driver=qcow2,"
        f"backing.file.filename={disk}", "-O", "raw", flat)  # fmt: skip
    return (instance / "console.log").read_text(errors="replace"), flat


def _root_offset(flat: Path) -> int:
    table = json.loads(run("sfdisk", "--json", flat).stdout)["partitiontable"]
    root = max(table["partitions"], key=lambda p: p["size"])
    return int(root["start"]) * 512


def _host_key_met(stack: MetadataStack, report: dict[str, object], flat: Path) -> None:
    """The key ssh met is the instance's own ed25519 host key, read from its disk."""
    instance = stack.server.data_dir / "instances" / str(report["instance_id"])
    known = {line.split()[1]: line.split()[2] for line in (instance / "known_hosts").read_text().splitlines()}
    offset = _root_offset(flat)
    on_disk = run("debugfs", "-R", "cat /etc/ssh/ssh_host_ed25519_key.pub", f"{flat}?offset={offset}").stdout
    kind, key = on_disk.decode().split()[:2]
    assert known.get(kind) == key, (known, kind)


def test_debian_verifies_through_the_metadata_service_and_through_nocloud(
    stack: MetadataStack, debian_disk: Path, tmp_path: Path
) -> None:
    by_metadata = _verify(stack, debian_disk, "--context", "metadata", "--tokens", "required")
    try:
        _checks(by_metadata, "DataSourceEc2Local")
        console, flat = _kept(stack, by_metadata, debian_disk, tmp_path)
        assert "Datasource DataSourceEc2" in console, console[-2000:]
        instance_id = str(by_metadata["instance_id"])
        log = stack.access_log(waiting_for=f"forwarder {instance_id} GET /latest/user-data 200")
        mine = [line.split()[3:6] for line in log.splitlines() if f" {instance_id} " in line]
        assert ["PUT", "/latest/api/token", "200"] in mine
        # IMDSv2 required: no request of this instance went without a token
        assert not [m for m in mine if m[2] == "401"], mine
        _host_key_met(stack, by_metadata, flat)
    finally:
        iw(stack, "rm", "--force", str(by_metadata["instance_id"]))

    by_seed = _verify(stack, debian_disk, "--context", "nocloud")
    try:
        _checks(by_seed, "DataSourceNoCloud")
        console, flat = _kept(stack, by_seed, debian_disk, tmp_path)
        assert "Datasource DataSourceNoCloud" in console, console[-2000:]
        _host_key_met(stack, by_seed, flat)
    finally:
        iw(stack, "rm", "--force", str(by_seed["instance_id"]))
    assert ps(stack) == {"instances": [], "orphans": []}


def test_debian_agent_image_verifies_through_the_metadata_service_and_through_nocloud(
    stack: MetadataStack, debian_agent_guest: DebianGuest
) -> None:
    """``build --from debian:bookworm --agent`` (our agent, openssh-server, no cloud-init): the
    same proof through both doors — the agent's ready line, an SSH login as root with the run's
    key, hostname, user-data once, grown root, the instance's own host key."""
    for context, source in (
        (("--context", "metadata", "--tokens", "required"), "ec2"),
        (("--context", "nocloud"), "nocloud"),
    ):
        report = _verify(stack, debian_agent_guest.disk, *context)
        try:
            checks = report["checks"]
            assert isinstance(checks, list)
            names = [c["name"] for c in checks]
            assert "ssh login" in names and "cloud-init" not in names, names
            assert all(c["ok"] for c in checks), checks
            named = {c["name"]: c for c in checks}
            hostname = report["hostname"]
            assert named["console"]["detail"] == f"agent ready (source {source}, hostname {hostname})"
            assert str(named["ssh login"]["detail"]).startswith("root@127.0.0.1:")
            assert str(named["ssh login"]["detail"]).endswith(f"/etc/hostname is '{hostname}'")
            assert named["ssh key"]["detail"] == "in /root/.ssh/authorized_keys"
            assert named["user-data"]["detail"] == "ran 1 time(s)"
            _console, flat = _kept(stack, report, debian_agent_guest.disk, Path(str(stack.server.data_dir)))
            _host_key_met(stack, report, flat)
            flat.unlink()
        finally:
            iw(stack, "rm", "--force", str(report["instance_id"]))
    assert ps(stack) == {"instances": [], "orphans": []}
