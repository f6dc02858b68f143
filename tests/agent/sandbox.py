"""Running the real agent script in a sandbox root, under the real shells it must support.

The agent resolves every absolute path under ``IMAGEWRIGHT_AGENT_ROOT``, so a temporary
directory with a few files (``etc/passwd``, ``etc/hostname``, a fake ``sys/class/net/eth0``)
stands for the guest. ``IMAGEWRIGHT_AGENT_DRYRUN=1`` turns commands that would change the
running host (hostname, ip, mount, DHCP, resize) into ``dry-run: ...`` log lines that tests
assert on; files under the sandbox are really written, user-data really runs.

Shells: ``busybox sh`` runs with a PATH holding only busybox applets (no curl, no jq, no
ssh-keygen: the toolset of the busybox test guest); ``dash`` and ``bash`` run with the host's
PATH (curl, jq, ssh-keygen, sfdisk). Together they cover both toolsets.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.tools import which

from imagewright.agent import ReadyLine, agent_script, find_ready_line

SHELLS = ("busybox", "dash", "bash")
DEFAULT_MAC = "52:54:00:12:34:56"
#: The agent's log prefix.
PREFIX = "imagewright-agent: "


def shell_argv(shell: str) -> list[str]:
    if shell == "busybox":
        return [which("busybox"), "sh"]
    return [which(shell)]


def busybox_path(directory: Path) -> Path:
    """A directory of busybox applet links: a PATH with nothing but busybox."""
    if directory.exists():
        return directory
    busybox = which("busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, check=True, text=True).stdout.split()
    directory.mkdir(parents=True)
    for applet in applets:
        (directory / applet).symlink_to(busybox)
    return directory


def host_path(*, growpart: bool = False) -> str:
    """The host's PATH; without growpart unless asked for.

    The agent prefers growpart (cloud-guest-utils) to its own sfdisk recipe; most tests check
    the recipe, so by default growpart is hidden: a directory of links to every other program.
    """
    full = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    return full if growpart else str(_programs_without(full, "growpart"))


@functools.cache
def _programs_without(path: str, hidden: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"agent-path-without-{hidden}-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    for entry in path.split(":"):
        folder = Path(entry)
        if not folder.is_dir():
            continue
        for program in folder.iterdir():
            link = directory / program.name
            if program.name == hidden or link.is_symlink() or not os.access(program, os.X_OK):
                continue
            link.symlink_to(program)
    return directory


@dataclass
class AgentRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def messages(self) -> list[str]:
        """Log lines without the prefix."""
        return [line[len(PREFIX) :] for line in self.lines if line.startswith(PREFIX)]

    @property
    def dry_run(self) -> list[str]:
        """The commands the agent would have run on a live system."""
        return [m[len("dry-run: ") :] for m in self.messages if m.startswith("dry-run: ")]

    @property
    def ready(self) -> ReadyLine:
        ready = find_ready_line(self.stdout)
        assert ready is not None, f"no ready line in:\n{self.stdout}\n{self.stderr}"
        return ready

    def ready_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith(PREFIX + "ready ")]


class Sandbox:
    """A fake guest root the agent runs against."""

    def __init__(self, root: Path, tools_dir: Path, script: Path) -> None:
        self.root = root
        self.tools_dir = tools_dir
        self.script = script

    # -- building the guest ------------------------------------------------------------------
    def populate(self, *, conf: str = "HOST_KEYS=missing\n", with_host_keys: bool = True) -> Sandbox:
        for d in (
            "etc/ssh",
            "etc/imagewright",
            "root",
            "home/debian",
            "tmp",
            "run",
            "var",
            "proc/sys/kernel",
        ):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.write(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\ndebian:x:1000:1000:Debian:/home/debian:/bin/sh\n",
        )
        self.write("etc/hostname", "template\n")
        self.write("etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n::1\tlocalhost ip6-localhost\n")
        self.write("proc/sys/kernel/hostname", "template\n")
        if conf:
            self.write("etc/imagewright/agent.conf", conf)
        if with_host_keys:
            for kind in ("rsa", "ecdsa", "ed25519"):
                self.write(f"etc/ssh/ssh_host_{kind}_key", f"fake {kind} key\n", 0o600)
                self.write(f"etc/ssh/ssh_host_{kind}_key.pub", f"ssh-{kind} AAAAfake\n")
        self.add_nic("eth0", DEFAULT_MAC, 2)
        return self

    def add_nic(self, name: str, mac: str, ifindex: int) -> None:
        nic = self.root / "sys/class/net" / name
        nic.mkdir(parents=True, exist_ok=True)
        (nic / "address").write_text(mac + "\n")
        (nic / "type").write_text("1\n")
        (nic / "ifindex").write_text(f"{ifindex}\n")
        device = self.root / "sys/devices/pci0000:00" / f"virtio-{name}"
        device.mkdir(parents=True, exist_ok=True)
        if not (nic / "device").exists():
            (nic / "device").symlink_to(os.path.relpath(device, nic))

    def write(self, relative: str, text: str | bytes, mode: int | None = None) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        if mode is not None:
            path.chmod(mode)
        return path

    def read(self, relative: str) -> str:
        return (self.root / relative).read_text()

    def state(self, instance_id: str) -> Path:
        return self.root / "var/lib/imagewright-agent" / instance_id

    def snapshot(self) -> dict[str, tuple[bytes, int, int]]:
        """Every file (content, mode, mtime_ns) except the agent's own log."""
        found: dict[str, tuple[bytes, int, int]] = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.name != "imagewright-agent.log":
                st = path.stat()
                found[str(path.relative_to(self.root))] = (path.read_bytes(), st.st_mode, st.st_mtime_ns)
        return found

    # -- running the agent -------------------------------------------------------------------
    def run(
        self,
        shell: str,
        *,
        media: Path | None = None,
        kind: str | None = None,
        imds: str | None = "http://127.0.0.1:9",
        dryrun: bool = True,
        env: Mapping[str, str] | None = None,
        toolset: str | None = None,
        timeout: float = 120,
        prefix: Sequence[str] = (),
    ) -> AgentRun:
        """Run the agent once; ``imds`` defaults to a closed local port (the discard port)."""
        toolset = toolset or ("busybox" if shell == "busybox" else "host")
        path = str(self.tools_dir) if toolset == "busybox" else host_path()
        environment = {
            "PATH": path,
            "HOME": "/root",
            "IMAGEWRIGHT_AGENT_ROOT": str(self.root),
        }
        if dryrun:
            environment["IMAGEWRIGHT_AGENT_DRYRUN"] = "1"
        if media is not None:
            environment["IMAGEWRIGHT_AGENT_MEDIA_DIR"] = str(media)
        if kind is not None:
            environment["IMAGEWRIGHT_AGENT_MEDIA_KIND"] = kind
        if imds is not None:
            environment["IMAGEWRIGHT_AGENT_IMDS"] = imds
        environment.update(env or {})
        proc = subprocess.run(
            [*prefix, *shell_argv(shell), str(self.script)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        return AgentRun(proc.returncode, proc.stdout, proc.stderr)


def write_agent(directory: Path) -> Path:
    path = directory / "imagewright-agent"
    path.write_bytes(agent_script())
    path.chmod(0o755)
    return path


def lib_call(
    shell: str,
    script: Path,
    commands: str,
    *,
    root: Path | None = None,
    tools_dir: Path | None = None,
    dryrun: bool = True,
    work: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Source the agent in library mode (IMAGEWRIGHT_AGENT_LIB=1) and run shell ``commands``."""
    environment = {
        "PATH": str(tools_dir) if shell == "busybox" and tools_dir else host_path(),
        "IMAGEWRIGHT_AGENT_LIB": "1",
    }
    if root is not None:
        environment["IMAGEWRIGHT_AGENT_ROOT"] = str(root)
    if dryrun:
        environment["IMAGEWRIGHT_AGENT_DRYRUN"] = "1"
    prologue = f'. "{script}"\n'
    if work is not None:
        prologue += f'WORK="{work}"\n'
    return subprocess.run(
        [*shell_argv(shell), "-c", prologue + commands],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def copy_tree(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination
