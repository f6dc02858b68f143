"""The agent for real (no dry-run) inside private network and UTS namespaces.

``unshare --net --uts --mount`` gives the agent a machine of its own: a veth interface with the
instance's MAC, its own host name, its own sysfs (mounted on the sandbox's /sys) and /proc.
The agent's ``ip`` commands, its ``hostname`` call and its DHCP client (busybox udhcpc with the
agent's event script, against busybox udhcpd in a second namespace) really run; afterwards the
namespace is inspected with ``ip`` and ``hostname``. Nothing outside the namespaces changes:
the agent.conf of these sandboxes also turns growing the root disk off.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.agent.media import medium_dir
from tests.agent.sandbox import SHELLS, Sandbox, host_path, shell_argv
from tests.fixtures.tools import which

from imagewright.metadata.instance import InstanceDescription, SshPublicKey
from imagewright.metadata.network import parse_network_spec

MAC = "52:54:00:ab:cd:ef"
CONF = "SOURCES=nocloud\nGROW_ROOT=no\nHOST_KEYS=missing\n"

SETUP = f"""
set -u
R=$IMAGEWRIGHT_AGENT_ROOT
ip link set lo up
ip link add x0 address {MAC} type veth peer name x1
mount -t sysfs sysfs "$R/sys"
mount --bind /proc "$R/proc"
"""

DHCP_SERVER = """
unshare -n sleep 120 &
SRV=$!
sleep 0.3
ip link set x1 netns $SRV
nsenter -t $SRV -n ip addr add 192.0.2.1/24 dev x1
nsenter -t $SRV -n ip link set x1 up
cat >"$WORKDIR/udhcpd.conf" <<EOC
start 192.0.2.100
end 192.0.2.110
interface x1
option subnet 255.255.255.0
option router 192.0.2.1
option dns 192.0.2.53
lease_file $WORKDIR/leases
pidfile $WORKDIR/udhcpd.pid
EOC
: >"$WORKDIR/leases"
nsenter -t $SRV -n busybox udhcpd -f "$WORKDIR/udhcpd.conf" >"$WORKDIR/udhcpd.log" 2>&1 &
DPID=$!
trap 'kill $DPID $SRV 2>/dev/null' EXIT
sleep 0.3
"""

REPORT = """
echo "@@ADDR $(ip -4 -o addr show dev x0 | awk '{print $4}')"
echo "@@ROUTE $(ip route show default)"
echo "@@HOST $(hostname)"
"""


def in_namespaces(box: Sandbox, shell: str, media: Path, body: str, path: str, workdir: Path) -> str:
    agent = " ".join(shell_argv(shell)) + f" {box.script}"
    script = SETUP + body.replace("AGENT", agent) + REPORT
    proc = subprocess.run(
        [which("unshare"), "--net", "--uts", "--mount", which("sh"), "-c", script],
        env={
            "PATH": path,
            "IMAGEWRIGHT_AGENT_ROOT": str(box.root),
            "IMAGEWRIGHT_AGENT_MEDIA_DIR": str(media),
            "IMAGEWRIGHT_AGENT_MEDIA_KIND": "nocloud",
            "WORKDIR": str(workdir),
            "HOME": "/root",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def report(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        if line.startswith("@@"):
            key, _, value = line[2:].partition(" ")
            found[key] = value
    return found


@pytest.mark.parametrize("shell", SHELLS)
def test_static_network_and_hostname_applied_for_real(
    shell: str, make_sandbox: Callable[..., Sandbox], ssh_keys: tuple[SshPublicKey, ...], tmp_path: Path
) -> None:
    box = make_sandbox(conf=CONF)
    instance = InstanceDescription(
        instance_id="i-0live0live0live0",
        hostname="web1.example.com",
        ssh_keys=ssh_keys,
        network=parse_network_spec("static:192.0.2.10/24,192.0.2.1,192.0.2.53"),
        mac=MAC,
    )
    media = medium_dir("nocloud", instance, tmp_path)

    # twice in the same namespaces: the second run finds the address in place
    out = in_namespaces(box, shell, media, "ip link set x1 up\nAGENT\nAGENT\n", host_path(), tmp_path)

    assert report(out) == {
        "ADDR": "192.0.2.10/24",
        "ROUTE": "default via 192.0.2.1 dev x0 ",
        "HOST": "web1",
    }
    assert (
        out.count("imagewright-agent: ready instance-id=i-0live0live0live0 hostname=web1 source=nocloud") == 2
    )
    assert "imagewright-agent: network: x0 already has 192.0.2.10/24" in out
    assert out.count("imagewright-agent: network: x0 address 192.0.2.10/24") == 2
    assert "nameserver 192.0.2.53" in box.read("etc/resolv.conf").splitlines()


@pytest.mark.parametrize("shell", SHELLS)
def test_dhcp_lease_applied_by_the_agents_udhcpc_script(
    shell: str,
    make_sandbox: Callable[..., Sandbox],
    ssh_keys: tuple[SshPublicKey, ...],
    busybox_tools: Path,
    tmp_path: Path,
) -> None:
    box = make_sandbox(conf=CONF)
    instance = InstanceDescription(instance_id="iid-dhcp01", hostname="leased", ssh_keys=ssh_keys)
    media = medium_dir("nocloud", instance, tmp_path)

    # udhcpc is busybox's; dash and bash find it through PATH (busybox sh has it built in)
    out = in_namespaces(
        box, shell, media, DHCP_SERVER + "AGENT\n", f"{host_path()}:{busybox_tools}", tmp_path
    )

    found = report(out)
    assert found["ADDR"].startswith("192.0.2.1") and found["ADDR"].endswith("/24")
    assert 100 <= int(found["ADDR"].split("/")[0].rsplit(".", 1)[1]) <= 110
    assert found["ROUTE"] == "default via 192.0.2.1 dev x0 "
    assert found["HOST"] == "leased"
    assert "imagewright-agent: network: DHCP on x0" in out
    assert box.read("etc/resolv.conf").splitlines()[-1] == "nameserver 192.0.2.53"
    assert "imagewright-agent: ready instance-id=iid-dhcp01 hostname=leased source=nocloud" in out
