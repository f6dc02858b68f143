"""The sandbox every program that reads untrusted data runs in (programs/runner.py).

The safety gate (``inspect``) is deliberately bypassed here: the program modules are called
directly with images the gate would refuse, and the sandbox alone must keep the program from
the host file the image names. Each such test also runs the same call with the sandbox
switched off, as a control that the image really does reach the file without it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.fixtures.tools import qemu_img, qemu_img_info, run, sparse_file

from imagewright.cli.main import cli
from imagewright.errors import GuestFilesystemError, ProgramError, SandboxUnavailableError
from imagewright.programs import e2fs, runner
from imagewright.programs import qemu_img as qemu_img_program
from imagewright.programs.runner import (
    NO_SANDBOX_ENV,
    Invocation,
    Sandbox,
    record_invocations,
    run_program,
    start_program,
    stop_program,
)

pytestmark = pytest.mark.integration

MIB = 1 << 20
#: A pattern no image made here contains by chance.
CANARY = b"imagewright-canary-7f3a9c0e!" * (MIB // 28 + 1)


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A host file a hostile image points at (1 MiB of a recognisable pattern)."""
    path = tmp_path / "canary.raw"
    path.write_bytes(CANARY[:MIB])
    return path


@pytest.fixture
def sandbox_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NO_SANDBOX_ENV, raising=False)
    monkeypatch.delenv(runner.BWRAP_ENV, raising=False)


@pytest.fixture
def warnings_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget that the no-sandbox warning was given (it is given once per process)."""
    monkeypatch.setattr(runner._policy, "warned", False)


def holds_canary(path: Path) -> bool:
    return path.exists() and CANARY[:64] in path.read_bytes()


def declared_binds(invocation: Invocation) -> set[tuple[str, str]]:
    """The ``(option, path)`` binds of one bwrap prefix beyond the system's own."""
    system = {"/usr", *runner._SYSTEM_FILES, *runner._ROOT_LINKS}
    wrapper = list(invocation.wrapper)
    binds: set[tuple[str, str]] = set()
    for index, arg in enumerate(wrapper):
        if arg in ("--ro-bind", "--ro-bind-try", "--bind-try", "--dev-bind-try"):
            source, dest = wrapper[index + 1], wrapper[index + 2]
            assert source == dest, "every path is shown at its own place"
            if source not in system:
                binds.add((arg, source))
    return binds


def ro(*paths: Path | str) -> set[tuple[str, str]]:
    return {("--ro-bind-try", os.path.abspath(p)) for p in paths}


def rw(*paths: Path | str) -> set[tuple[str, str]]:
    return {("--bind-try", os.path.abspath(p)) for p in paths}


# --------------------------------------------------------------------------------------------
# Hostile images whose gate was bypassed: the named host file does not exist for qemu-img


def _convert_both_ways(image: Path, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Convert ``image`` sandboxed (must fail; returns the error) and unsandboxed (the control)."""
    sandboxed = tmp_path / "sandboxed.raw"
    with pytest.raises(ProgramError) as caught:
        qemu_img_program.convert(image, fmt, sandboxed, "raw")
    assert not holds_canary(sandboxed)
    with_progress = tmp_path / "sandboxed-progress.raw"
    with pytest.raises(ProgramError) as caught_progress:
        qemu_img_program.convert(image, fmt, with_progress, "raw", progress=lambda done, total: None)
    assert not holds_canary(with_progress)
    assert str(caught_progress.value).split(": ", 1)[1] == str(caught.value).split(": ", 1)[1]

    monkeypatch.setenv(NO_SANDBOX_ENV, "1")
    control = tmp_path / "control.raw"
    qemu_img_program.convert(image, fmt, control, "raw")
    assert holds_canary(control), "without the sandbox the hostile image does reach the canary"
    return str(caught.value)


def test_qcow2_backed_by_a_canary_cannot_read_it(
    canary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_on: None
) -> None:
    overlay = tmp_path / "overlay.qcow2"
    # A relative backing name: qemu resolves it next to the overlay, where the canary sits.
    qemu_img("create", "-q", "-f", "qcow2", "-b", canary.name, "-F", "raw", overlay)
    message = _convert_both_ways(overlay, "qcow2", tmp_path, monkeypatch)
    assert str(canary) in message and "No such file or directory" in message


def test_vmdk_with_a_flat_extent_on_the_canary_cannot_read_it(
    canary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_on: None
) -> None:
    descriptor = tmp_path / "disk.vmdk"
    descriptor.write_text(
        "# Disk DescriptorFile\n"
        "version=1\n"
        "CID=fffffffe\n"
        "parentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        f'RW {MIB // 512} FLAT "{canary}" 0\n'
        'ddb.adapterType = "ide"\n'
        'ddb.geometry.cylinders = "2"\n'
        'ddb.geometry.heads = "16"\n'
        'ddb.geometry.sectors = "63"\n',
        encoding="ascii",
    )
    message = _convert_both_ways(descriptor, "vmdk", tmp_path, monkeypatch)
    assert str(canary) in message and "No such file or directory" in message


def test_json_backing_name_cannot_reach_the_canary(
    canary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_on: None
) -> None:
    overlay = tmp_path / "overlay.qcow2"
    backing = "json:" + json.dumps({"driver": "raw", "file": {"driver": "file", "filename": str(canary)}})
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw", overlay, str(MIB))
    message = _convert_both_ways(overlay, "qcow2", tmp_path, monkeypatch)
    assert str(canary) in message and "No such file or directory" in message


def test_qemu_img_check_of_the_hostile_overlay_names_the_missing_backing_file(
    canary: Path, tmp_path: Path, sandbox_on: None
) -> None:
    """qemu-img check opens the backing chain too."""
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(canary), "-F", "raw", overlay)
    with pytest.raises(ProgramError) as caught:
        qemu_img_program.check(overlay, "qcow2")
    assert str(canary) in str(caught.value)


# --------------------------------------------------------------------------------------------
# debugfs on a filesystem inside a partition (``IMAGE?offset=N``)


@pytest.fixture
def partitioned_ext4(tmp_path: Path) -> tuple[Path, int]:
    """An image with an ext4 at 1 MiB holding /hello."""
    image = tmp_path / "disk.img"
    sparse_file(image, 9 * MIB)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello").write_text("hello\n")
    run("mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={MIB}", "-d", tree, image, "8M")
    return image, MIB


def test_debugfs_at_an_offset_sees_only_its_image(
    partitioned_ext4: tuple[Path, int],
    canary: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sandbox_on: None,
) -> None:
    image, offset = partitioned_ext4
    device = f"{image}?offset={offset}"
    outside = tmp_path / "rdump-target"
    outside.mkdir()
    # Verbs that open host files but are not in e2fs._host_files: they must see nothing.
    attempts = [
        e2fs.command("ls", "/"),
        e2fs.command("logdump", "-f", str(canary)),
        e2fs.command("rdump", "/", str(outside)),
    ]
    with record_invocations() as log:
        outputs = e2fs.run_debugfs(device, attempts)
    assert b"hello" in outputs[0]
    assert f"No such file or directory while opening {canary}".encode() in outputs[1]
    assert b"No such file or directory" in outputs[2]
    assert list(outside.iterdir()) == [], "rdump wrote nothing on the host"
    (call,) = log.invocations
    script = call.argv[call.argv.index("-f") + 1]
    assert declared_binds(call) == ro(image, script)
    assert call.argv[-1] == device

    monkeypatch.setenv(NO_SANDBOX_ENV, "1")
    control = e2fs.run_debugfs(device, attempts)
    assert b"No such file" not in control[1], "without the sandbox debugfs reads the canary"
    assert (outside / "hello").read_text() == "hello\n", "and rdump writes on the host"


def test_debugfs_sees_the_host_files_its_verbs_name_and_only_those(
    partitioned_ext4: tuple[Path, int], tmp_path: Path, sandbox_on: None
) -> None:
    image, offset = partitioned_ext4
    source = tmp_path / "source.txt"
    source.write_text("written in\n")
    value = tmp_path / "value.bin"
    value.write_bytes(b"attribute value")
    dumped = tmp_path / "out" / "hello.copy"
    dumped.parent.mkdir()
    device = e2fs.device_name(image, offset)
    with record_invocations() as log:
        outputs = e2fs.run_debugfs(
            device,
            [
                e2fs.command("write", str(source), "/new"),
                e2fs.command("ea_set", "-f", str(value), "/new", "user.test"),
                e2fs.command("dump", "/hello", str(dumped)),
            ],
            writable=True,
        )
    assert outputs[0].startswith(b"Allocated inode")
    assert dumped.read_text() == "hello\n"
    (call,) = log.invocations
    script = call.argv[call.argv.index("-f") + 1]
    assert declared_binds(call) == rw(image, dumped) | ro(script, source, value)
    assert "written in" in run("debugfs", "-R", "cat /new", device).stdout.decode()


def test_device_name_is_split_where_libext2fs_splits_it(tmp_path: Path, sandbox_on: None) -> None:
    """The first '?' ends the file name: 'IMG?offset=N?x' shows IMG and nothing named after it."""
    image = tmp_path / "disk.img"
    sparse_file(image, MIB)
    with record_invocations() as log, pytest.raises(GuestFilesystemError, match="Invalid argument"):
        e2fs.read_superblock(f"{image}?offset=0?{tmp_path / 'canary.raw'}")
    assert declared_binds(log.invocations[0]) == ro(image)


# --------------------------------------------------------------------------------------------
# Every program module that handles untrusted data goes through the sandbox, with exactly its binds


def test_every_qemu_img_and_qemu_io_call_is_sandboxed_with_its_own_files(
    tmp_path: Path, sandbox_on: None
) -> None:
    from imagewright.programs import qemu_io

    image = tmp_path / "a.qcow2"
    raw = tmp_path / "a.raw"
    vmdk = tmp_path / "b.vmdk"
    with record_invocations() as log:
        qemu_img_program.create(image, "qcow2", 4 * MIB)
        qemu_img_program.resize(image, "qcow2", 8 * MIB)
        assert qemu_img_program.info(image, "qcow2")["virtual-size"] == 8 * MIB
        assert qemu_img_program.check(image, "qcow2").clean
        qemu_io.write_guest(image, "qcow2", [(512, b"\xab" * 512)])
        qemu_img_program.convert(image, "qcow2", raw, "raw")
        qemu_img_program.convert(raw, "raw", vmdk, "vmdk", progress=lambda done, total: None)
    assert raw.read_bytes()[512:1024] == b"\xab" * 512
    assert all(call.sandboxed for call in log.invocations)
    expected = [
        rw(image),
        rw(image),
        ro(image),
        ro(image),
        None,  # qemu-io: checked below (its data file has a random name)
        ro(image) | rw(raw),
        ro(raw) | rw(vmdk),
    ]
    for call, binds in zip(log.invocations, expected, strict=True):
        if binds is not None:
            assert declared_binds(call) == binds, call.argv
    qemu_io_call = log.invocations[4]
    data_file = qemu_io_call.argv[qemu_io_call.argv.index("-c") + 1].split()[3]
    assert declared_binds(qemu_io_call) == rw(image) | ro(data_file)


def test_convert_to_nbd_sees_the_image_and_the_socket(tmp_path: Path, sandbox_on: None) -> None:
    from imagewright.ops.convert.nbd_sink import NbdStreamSink

    image = tmp_path / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", image, str(MIB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 4096 4096", image)

    class Collect:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, offset: int, data: memoryview) -> None:
            self.data[len(self.data) :] = b"\0" * (offset - len(self.data)) + bytes(data)

        def zeros(self, offset: int, length: int) -> None:
            self.data[len(self.data) :] = b"\0" * (offset + length - len(self.data))

    sockets = tmp_path / "s"
    sockets.mkdir()
    socket_path = str(sockets / "sink")
    collected = Collect()
    with record_invocations() as log, NbdStreamSink(socket_path, MIB, collected) as sink:
        qemu_img_program.convert_to_nbd(image, "qcow2", socket_path)
        sink.finish()
    assert bytes(collected.data[4096:8192]) == b"\x5a" * 4096
    (call,) = log.invocations
    assert declared_binds(call) == ro(image) | rw(socket_path)


def test_e2fsprogs_calls_are_sandboxed_with_their_image(tmp_path: Path, sandbox_on: None) -> None:
    image = tmp_path / "disk.img"
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    device = e2fs.device_name(image, MIB)
    with record_invocations() as log:
        sparse_file(image, 17 * MIB)
        e2fs.mke2fs(image, size_bytes=8 * MIB, offset=MIB, root_dir=tree)
        assert e2fs.read_superblock(device).size == 8 * MIB
        assert e2fs.e2fsck_check(device).clean
        e2fs.e2fsck_replay_journal(device)
        e2fs.e2fsck_preen(device)
        e2fs.resize2fs(device, 16 * MIB)
        e2fs.tune2fs(device, label="sandboxed")
        assert e2fs.read_superblock(device).label == "sandboxed"
    config = [p for p in ("/etc/mke2fs.conf",) if os.path.exists(p)]
    fsck_config = [p for p in ("/etc/e2fsck.conf",) if os.path.exists(p)]
    expected = [
        rw(image) | ro(tree, *config),
        ro(image),
        ro(image, *fsck_config),
        rw(image) | ro(*fsck_config),
        rw(image) | ro(*fsck_config),
        rw(image),
        rw(image),
        ro(image),
    ]
    assert len(log.invocations) == len(expected)
    for call, binds in zip(log.invocations, expected, strict=True):
        assert call.sandboxed and declared_binds(call) == binds, call.argv
    assert run("e2fsck", "-fn", device).returncode == 0


def test_sfdisk_and_mtools_are_sandboxed_with_their_image(tmp_path: Path, sandbox_on: None) -> None:
    from imagewright.programs import mtools, sfdisk

    disk = tmp_path / "disk.img"
    sparse_file(disk, 4 * MIB)
    fat = tmp_path / "fat.img"
    sparse_file(fat, 2 * MIB)
    payload = tmp_path / "payload.txt"
    payload.write_text("payload")
    with record_invocations() as log:
        sfdisk.write_table(disk, "label: dos\nstart=2048, size=4096, type=83\n")
        mtools.format_fat(fat, "CIDATA", 0x1234)
        mtools.make_directories(fat, ["dir"])
        mtools.copy_in(fat, [payload], "dir")
        assert "dir/payload.txt" in mtools.list_tree(fat)
        assert mtools.read_file(fat, "dir/payload.txt") == b"payload"
    expected = [rw(disk), rw(fat), rw(fat), rw(fat) | ro(payload), ro(fat), ro(fat)]
    for call, binds in zip(log.invocations, expected, strict=True):
        assert call.sandboxed and declared_binds(call) == binds, call.argv
    assert "type=83" in run("sfdisk", "-d", disk).stdout.decode()


def test_qemu_system_sees_its_drives_kernel_log_and_kvm_only_under_kvm(tmp_path: Path) -> None:
    from imagewright.programs.qemu_system import (
        DirectKernel,
        Drive,
        GuestForward,
        HostForward,
        MachineSpec,
        NetworkSpec,
        SerialConsole,
        machine_sandbox,
    )

    disk, seed, iso, kernel, log = (
        tmp_path / n for n in ("d.qcow2", "seed.img", "s.iso", "vmlinuz", "c.log")
    )
    spec = MachineSpec(
        accelerator="kvm",
        drives=(
            Drive(disk, format="qcow2"),
            Drive(seed, snapshot=True),
            Drive(iso, bus="ide", media="cdrom"),
        ),
        serial=SerialConsole(log_file=log),
        direct_kernel=DirectKernel(kernel),
        network=NetworkSpec(
            mode="user",
            restrict=True,
            guest_forwards=(
                GuestForward("10.0.2.100", 80, ("/opt/x/responder", "a"), reads=(tmp_path / "cfg",)),
            ),
        ),
    )
    sandbox = machine_sandbox(spec)
    assert set(sandbox.reads) == {str(seed), str(iso), str(kernel), "/opt/x/responder", str(tmp_path / "cfg")}
    assert set(sandbox.writes) == {str(disk), str(log)}
    assert sandbox.devices == ("/dev/kvm",) and not sandbox.network
    tcg = machine_sandbox(
        MachineSpec(
            accelerator="tcg",
            network=NetworkSpec(mode="user", restrict=True, host_forwards=(HostForward(0, 22),)),
        )
    )
    assert tcg.devices == () and tcg.network, "a hostfwd listens on the host's network"


@pytest.mark.slow
def test_boot_runs_qemu_in_the_sandbox_and_stop_reaches_qemu_itself(tmp_path: Path, sandbox_on: None) -> None:
    """The probe disk boots in the sandbox; a guest that never ends is stopped with SIGTERM
    delivered to QEMU itself (it says so), not by killing bwrap (which would SIGKILL it)."""
    from imagewright.compute.accel import PROBE_MESSAGE, AccelDecision, write_probe_disk
    from imagewright.compute.boot import boot
    from imagewright.programs.qemu_system import (
        Drive,
        MachineSpec,
        SerialConsole,
        machine_sandbox,
        qemu_system_argv,
    )

    probe = write_probe_disk(tmp_path / "probe.img")
    log = tmp_path / "console.log"
    with record_invocations() as calls:
        result = boot(
            probe,
            format="raw",
            timeout=120,
            expect=PROBE_MESSAGE,
            console_log=log,
            accelerator=AccelDecision("tcg", "test"),
        )
    assert result.matched
    (call,) = calls.invocations
    assert declared_binds(call) == rw(probe, log)
    assert PROBE_MESSAGE in log.read_text()

    blank = tmp_path / "blank.img"
    sparse_file(blank, MIB)  # no boot code: SeaBIOS waits forever
    spec = MachineSpec(
        accelerator="tcg", drives=(Drive(blank),), serial=SerialConsole(stdio=False), debug_exit=False
    )
    errors = tmp_path / "stderr"
    with errors.open("wb") as stderr:
        proc = start_program(
            qemu_system_argv(spec),
            stdout=subprocess.DEVNULL,
            stderr=stderr.fileno(),
            sandbox=machine_sandbox(spec),
        )
        time.sleep(2)
        assert proc.poll() is None
        stop_program(proc, grace=30)
    assert "terminating on signal 15" in errors.read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_guestfish_sees_its_disk_and_passes_host_files_through_its_exchange(
    tmp_path: Path, sandbox_on: None
) -> None:
    """Server and clients in the sandbox; upload/download of host files outside it work."""
    from imagewright.programs.guestfish import GuestfishSession, _cache_directory, _socket_directory

    disk = tmp_path / "disk.raw"
    sparse_file(disk, 32 * MIB)
    run("mkfs.ext4", "-q", disk)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = elsewhere / "in.txt"
    source.write_text("uploaded\n")
    target = elsewhere / "out.txt"
    with record_invocations() as log:
        session = GuestfishSession(disk, writable=True)
        try:
            session.call("mount", "/dev/sda", "/")
            session.call("upload", str(source), "/file")
            session.call("download", "/file", str(target))
        finally:
            session.close()
    assert target.read_text() == "uploaded\n"
    server, *clients = log.invocations
    exchange = [p for p in server.sandbox.directories if "imagewright-guestfish-" in p]
    assert len(exchange) == 1 and not Path(exchange[0]).exists(), "the exchange goes with the session"
    appliance = [p for p in ("/etc", "/boot", "/var/lib/dpkg") if os.path.exists(p)]
    devices = {("--dev-bind-try", "/dev/kvm")} if os.access("/dev/kvm", os.R_OK | os.W_OK) else set()
    sockets = _socket_directory()
    assert declared_binds(server) == (
        rw(disk, _cache_directory()[1], sockets, exchange[0]) | ro(*appliance) | devices
    )
    assert "--unshare-pid" not in server.wrapper and "--unshare-net" in server.wrapper
    for client in clients:
        assert client.sandboxed and declared_binds(client) == rw(sockets)
    named = " ".join(" ".join(c.argv) for c in clients)
    assert str(source) not in named and str(target) not in named, "the server is handed exchange paths only"


# --------------------------------------------------------------------------------------------
# What a sandboxed program sees, and that it dies with its parent


def test_a_sandboxed_program_sees_only_what_it_was_given(
    canary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_on: None
) -> None:
    monkeypatch.setenv("IMAGEWRIGHT_TEST_SECRET", "do-not-leak")
    (Path("/tmp") / f"imagewright-test-{os.getpid()}").write_text("host /tmp")
    try:
        shown = run_program(["/usr/bin/env"], sandbox=Sandbox())
        assert "do-not-leak" not in shown.stdout_text and "LANG=C.UTF-8" in shown.stdout_text
        listing = run_program(["/usr/bin/ls", "-A", "/tmp", "/var/tmp"], sandbox=Sandbox())
        assert "imagewright-test" not in listing.stdout_text
    finally:
        (Path("/tmp") / f"imagewright-test-{os.getpid()}").unlink()
    hidden = run_program(["/usr/bin/cat", str(canary)], sandbox=Sandbox(), check=False)
    assert hidden.returncode != 0 and "No such file or directory" in hidden.stderr_text
    given = run_program(["/usr/bin/head", "-c", "28", str(canary)], sandbox=Sandbox(reads=(canary,)))
    assert given.stdout == CANARY[:28]
    refused = run_program(["/usr/bin/touch", str(canary)], sandbox=Sandbox(reads=(canary,)), check=False)
    assert "Read-only file system" in refused.stderr_text
    created = tmp_path / "new"
    run_program(
        ["/usr/bin/cp", str(canary), str(created)], sandbox=Sandbox(reads=(canary,), writes=(created,))
    )
    assert created.read_bytes() == canary.read_bytes()
    interfaces = run_program(["/usr/bin/cat", "/proc/net/dev"], sandbox=Sandbox()).stdout_text
    assert [line.split(":")[0].strip() for line in interfaces.splitlines()[2:]] == ["lo"]
    processes = run_program(["/usr/bin/ls", "/proc"], sandbox=Sandbox()).stdout_text.split()
    assert len([p for p in processes if p.isdigit()]) <= 3, "a PID namespace of its own"
    capabilities = run_program(
        ["/usr/bin/grep", "CapEff", "/proc/self/status"], sandbox=Sandbox()
    ).stdout_text
    allowed = (1 << 1) | (1 << 2) if os.geteuid() == 0 else 0  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    assert int(capabilities.split()[1], 16) == allowed


def test_a_program_not_known_to_be_trusted_cannot_run_without_a_sandbox() -> None:
    with pytest.raises(ValueError, match="Sandbox"):
        run_program(["qemu-img", "--version"])
    with pytest.raises(ValueError, match="Sandbox"):
        run_program(["/usr/bin/true"])
    assert set(runner.TRUSTED_INPUTS) == {
        "apt-get", "apt-cache", "dpkg-deb", "ldd", "depmod", "busybox", "grub-mkimage", "mkswap",
        "mmdebstrap", "unshare", "ssh-keygen", "ssh",
    }  # fmt: skip


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_the_sandboxed_program_dies_with_its_parent(sandbox_on: None) -> None:
    proc = start_program(["/usr/bin/sleep", "600"], sandbox=Sandbox())
    try:
        deadline = time.monotonic() + 10
        chain: list[int] = []
        while time.monotonic() < deadline:
            init = _children(proc.pid)
            chain = _children(init[0]) if init else []
            if chain:
                break
            time.sleep(0.05)
        (sleeper,) = chain
        assert Path(f"/proc/{sleeper}/cmdline").read_bytes().startswith(b"/usr/bin/sleep")
        os.kill(proc.pid, signal.SIGKILL)  # bwrap itself: no chance to clean up
        proc.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{sleeper}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{sleeper}").exists()
    finally:
        stop_program(proc)


def test_a_program_killed_inside_the_sandbox_reports_its_signal(sandbox_on: None) -> None:
    """bwrap exits 128+N for a program killed by signal N; callers see -N, as without it."""
    killed = run_program(["/usr/bin/sh", "-c", "kill -TERM $$"], sandbox=Sandbox(), check=False)
    assert killed.returncode == -signal.SIGTERM
    with pytest.raises(ProgramError, match=r"exit -9"):
        run_program(["/usr/bin/sh", "-c", "kill -KILL $$"], sandbox=Sandbox())
    plain = run_program(["/usr/bin/sh", "-c", "exit 3"], sandbox=Sandbox(), check=False)
    assert plain.returncode == 3
    proc = start_program(["/usr/bin/sh", "-c", "kill -KILL $$"], sandbox=Sandbox())
    assert proc.wait(timeout=30) == -signal.SIGKILL and proc.returncode == -signal.SIGKILL
    stop_program(proc)


# --------------------------------------------------------------------------------------------
# Where the sandbox cannot start (user namespaces disabled): refuse, or run with a warning


@pytest.fixture
def broken_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bwrap that fails as it does where unprivileged user namespaces are disabled; it
    counts its runs in ``runs``."""
    script = tmp_path / "bwrap"
    runs = tmp_path / "runs"
    script.write_text(
        f"#!/bin/sh\necho run >> '{runs}'\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv(runner.BWRAP_ENV, str(script))
    monkeypatch.delenv(NO_SANDBOX_ENV, raising=False)
    return runs


def test_without_user_namespaces_a_program_is_refused_in_one_sentence(
    broken_bwrap: Path, tmp_path: Path
) -> None:
    image = tmp_path / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", image, str(MIB))
    for _ in range(3):
        with pytest.raises(SandboxUnavailableError) as caught:
            qemu_img_program.info(image, "qcow2")
    message = str(caught.value)
    assert message == (
        "The sandbox for programs that read untrusted images cannot start here "
        "(bwrap: setting up uid map: Permission denied); enable unprivileged user namespaces, "
        f"or run with --no-sandbox (or {NO_SANDBOX_ENV}=1) to accept that a hostile image may "
        "make them read host files."
    )
    assert broken_bwrap.read_text().count("run") == 1, "probed once per process, then cached"


def test_a_missing_bwrap_is_refused_naming_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runner.BWRAP_ENV, str(tmp_path / "no-such-bwrap"))
    monkeypatch.delenv(NO_SANDBOX_ENV, raising=False)
    with pytest.raises(SandboxUnavailableError, match="no-such-bwrap could not be started"):
        run_program(["/usr/bin/true"], sandbox=Sandbox())


def test_the_cli_refuses_in_one_line_and_runs_with_a_warning_under_no_sandbox(
    broken_bwrap: Path, tmp_path: Path, warnings_reset: None
) -> None:
    source = tmp_path / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", source, str(MIB))
    cli_runner = CliRunner()
    refused = cli_runner.invoke(cli, ["convert", str(source), str(tmp_path / "out.vmdk")])
    assert refused.exit_code == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagewright: error: The sandbox for programs")
    assert not (tmp_path / "out.vmdk").exists()

    allowed = cli_runner.invoke(cli, ["--no-sandbox", "convert", str(source), str(tmp_path / "out.vmdk")])
    assert allowed.exit_code == 0, allowed.output
    assert "imagewright: warning: external programs run without a sandbox" in allowed.stderr
    assert qemu_img_info(tmp_path / "out.vmdk", "vmdk")["virtual-size"] == MIB
    assert not runner._policy.disabled, "--no-sandbox ends with its command"


def test_the_environment_variable_runs_without_the_sandbox_and_warns_once(
    broken_bwrap: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    warnings_reset: None,
) -> None:
    monkeypatch.setenv(NO_SANDBOX_ENV, "1")
    image = tmp_path / "a.qcow2"
    with caplog.at_level(logging.WARNING, logger="imagewright.sandbox"), record_invocations() as log:
        qemu_img_program.create(image, "qcow2", MIB)
        assert qemu_img_program.virtual_size(image, "qcow2") == MIB
    assert [r.getMessage() for r in caplog.records].count(runner.NO_SANDBOX_WARNING) == 1
    assert not any(call.sandboxed for call in log.invocations)
    assert all(call.sandbox is not None for call in log.invocations), "still declared"
    assert not broken_bwrap.exists(), "bwrap is not even probed"


@pytest.fixture(autouse=True)
def _no_leftover_policy() -> Iterator[None]:
    yield
    assert not runner._policy.disabled
