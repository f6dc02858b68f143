"""imagewright ssh: a session on an instance through its forwarded port (TCG boot: slow).

The test guest has no SSH server; this one gets Debian's dropbear (``dropbear-bin``, installed
by the Makefile) copied from the host with the libraries ``ldd`` names, as the test guest's own
host tools are, plus an S-script that starts it (host keys made on first use, ``-R``). Root's
password is ``*`` (no password, not locked: dropbear refuses locked accounts). Everything else
is the real chain: the prepared agent writes the key it gets from a NoCloud seed, QEMU forwards
127.0.0.1:PORT to the guest's port 22, ``wait --for ssh`` waits for the banner, and ``ssh``
runs OpenSSH's client with the instance's own known_hosts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.fixtures.metadata_service import MetadataStack
from tests.fixtures.registry import BIN, free_port
from tests.fixtures.tools import run
from tests.launch.conftest import iw, iw_json, ps

from imagewright.compute.testguest import TestGuest
from imagewright.ops.build import build
from imagewright.ops.prepare import PrepareOptions, prepare
from imagewright.programs.ldd import shared_libraries

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DROPBEAR = Path("/usr/sbin/dropbear")
START_DROPBEAR = """\
#!/bin/sh
# an SSH server for the launch tests: dropbear, host keys made on first connection
mkdir -p /etc/dropbear
/usr/sbin/dropbear -R -E -p 22 -P /run/dropbear.pid
"""


def with_dropbear(testguest: TestGuest, tree: Path) -> Path:
    """A copy of the test guest's tree with dropbear installed and started at boot."""
    shutil.copytree(testguest.root, tree, symlinks=True)
    for host_file in (DROPBEAR, *shared_libraries(DROPBEAR)):
        # the tree is usr-merged like the host: /lib -> usr/lib, so the host's path fits
        target = tree / host_file.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy2(host_file.resolve(), target)
    script = tree / "etc/init.d/S50dropbear"
    script.write_text(START_DROPBEAR)
    script.chmod(0o755)
    shadow = tree / "etc/shadow"
    shadow.write_text(shadow.read_text().replace("root:!:", "root:*:"))
    (tree / "etc/shells").write_text("/bin/sh\n")
    return tree


def iw_ssh(
    stack: MetadataStack, instance_id: str, key: Path, *command: str
) -> subprocess.CompletedProcess[str]:
    """``imagewright ssh`` with the data dir given before ``--`` (after it, all is the command)."""
    argv = [str(BIN / "imagewright"), "ssh", "--data-dir", str(stack.server.data_dir), instance_id,
            "-i", str(key), "--batch", "--", *command]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_ssh_runs_a_command_with_the_instances_key_and_refuses_another(
    stack: MetadataStack, testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    build(with_dropbear(testguest_rootfs, tmp_path / "tree"), disk)
    prepare(disk, options=PrepareOptions(agent=True))
    for name in ("mine", "other"):
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", tmp_path / name)
    port = free_port()

    launched = iw_json(stack, "run", str(disk), "--context", "nocloud", "--key-file",
                       str(tmp_path / "mine.pub"), "--port-forward", f"{port}:22", "--detach")  # fmt: skip
    instance_id = launched["id"]
    try:
        waited = iw(stack, "wait", instance_id, "--for", "ssh", "--timeout", "400")
        assert waited.stdout.strip().startswith(
            f"instance {instance_id}: SSH server on 127.0.0.1:{port} (SSH-2.0-"
        )

        answer = iw_ssh(stack, instance_id, tmp_path / "mine", "cat", "/etc/hostname", ";", "id", "-u")
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.split() == [launched["hostname"], "0"]
        known_hosts = Path(launched["directory"]) / "known_hosts"
        # learned on first use, kept with the instance: the key the server shows (ssh-keyscan)
        learned = known_hosts.read_text().split()
        assert learned[0] == f"[127.0.0.1]:{port}"
        scanned = run("ssh-keyscan", "-p", str(port), "-t", learned[1], "127.0.0.1").stdout.decode().split()
        assert scanned[1:3] == learned[1:3]

        # The exit status is the remote command's; another key is refused (ssh's own 255).
        assert iw_ssh(stack, instance_id, tmp_path / "mine", "exit", "7").returncode == 7
        refused = iw_ssh(stack, instance_id, tmp_path / "other", "true")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr
    finally:
        iw(stack, "rm", "--force", instance_id)
    assert ps(stack) == {"instances": [], "orphans": []}


def test_ssh_to_an_instance_without_a_forwarded_port_22_is_one_sentence(stack: MetadataStack) -> None:
    launched = iw_json(stack, "run", "tiny", "--detach")
    try:
        for args in (("ssh", launched["id"]), ("wait", launched["id"], "--for", "ssh")):
            result = iw(stack, *args, check=False)
            assert result.returncode == 1
            assert result.stderr.strip() == (
                f"imagewright: error: The instance {launched['id']} has no port forwarded to its port 22; "
                "run it with --port-forward HOSTPORT:22."
            )
    finally:
        iw(stack, "rm", "--force", launched["id"])
    unknown = iw(stack, "ssh", "i-0123456789abcdef0", check=False)
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    assert ps(stack) == {"instances": [], "orphans": []}
