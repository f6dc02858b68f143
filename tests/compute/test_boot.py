"""Boot tests: the test guest under QEMU (TCG here), watched by the harness.

Each boot is a real one: the Debian kernel, our initramfs, busybox init and rcS. No QEMU may
outlive a test: every test that boots checks ``pgrep -f`` on its own console-log path.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from tests.fixtures.tools import run

from imagewright.compute.accel import PROBE_BOOT_SECTOR, PROBE_EXIT_STATUS, PROBE_MESSAGE, write_probe_disk
from imagewright.compute.boot import BootError, BootTimeoutError, DirectKernel, Drive, boot
from imagewright.compute.testguest import FlatFilesystem, TestGuest, flat_ext4
from imagewright.errors import UnsafeImageError
from imagewright.programs.runner import record_invocations

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BOOT_TIMEOUT = 180.0


def _qemu_processes(console_log: Path) -> list[str]:
    proc = run("pgrep", "-a", "-f", str(console_log), check=False)
    return [line for line in proc.stdout.decode().splitlines() if "qemu-system" in line]


def _direct(guest: TestGuest, root: str, *, poweroff: bool = False, extra: str = "") -> DirectKernel:
    return DirectKernel(
        guest.kernel, guest.initrd, guest.kernel_command_line(root, poweroff=poweroff, extra=extra)
    )


def test_initramfs_boots_flat_ext4_to_the_marker_and_qemu_is_gone(
    testguest_rootfs: TestGuest, testguest_flat_ext4: FlatFilesystem, tmp_path: Path
) -> None:
    log = tmp_path / f"console-{uuid.uuid4().hex}.log"
    result = boot(
        testguest_flat_ext4.path,
        format="raw",
        timeout=BOOT_TIMEOUT,
        expect=testguest_rootfs.marker,
        snapshot=True,
        console_log=log,
        direct_kernel=_direct(testguest_rootfs, f"UUID={testguest_flat_ext4.uuid}"),
    )
    assert result.matched and not result.timed_out
    assert result.matched_line == testguest_rootfs.marker_line(hostname="testguest", swaps=0, root="/dev/vda")
    assert result.exit_status is None  # the harness stopped QEMU after the match
    assert result.accelerator == "tcg" and "PVM" in result.accelerator_reason
    assert 0 < result.elapsed < BOOT_TIMEOUT
    assert "imagewright-initramfs: root /dev/vda mounted rw" in log.read_text(errors="replace")
    assert _qemu_processes(log) == []


def test_poweroff_ends_qemu_with_status_zero(
    testguest_rootfs: TestGuest, testguest_flat_ext4: FlatFilesystem, tmp_path: Path
) -> None:
    log = tmp_path / f"console-{uuid.uuid4().hex}.log"
    result = boot(
        testguest_flat_ext4.path,
        format="raw",
        timeout=BOOT_TIMEOUT,
        snapshot=True,
        console_log=log,
        direct_kernel=_direct(testguest_rootfs, f"LABEL={testguest_flat_ext4.label}", poweroff=True),
    )
    assert result.exit_status == 0 and result.powered_off and not result.timed_out
    assert any(line.startswith(testguest_rootfs.marker) for line in result.last_lines)
    assert "reboot: Power down" in log.read_text(errors="replace")
    assert _qemu_processes(log) == []


def _variant_tree(guest: TestGuest, dest: Path, swap_uuid: str) -> Path:
    """A copy of the guest with a UUID= swap in fstab, an rc.local hook and a check script."""
    shutil.copytree(guest.root, dest, symlinks=True)
    with (dest / "etc/fstab").open("a") as fstab:
        fstab.write(f"UUID={swap_uuid} none swap sw 0 0\n")
    (dest / "etc/rc.local").write_text(
        "#!/bin/sh\necho 'check: rc.local ran'\nhostname fromrclocal\nexit 0\n", encoding="utf-8"
    )
    check = dest / "etc/init.d/S50check"
    check.write_text(
        "#!/bin/sh\n"
        "ssh-keygen -q -A && ls /etc/ssh/ssh_host_ed25519_key >/dev/null && echo 'check: ssh-keygen ok'\n"
        "sfdisk --version | sed 's/^/check: /'\n"
        "resize2fs 2>&1 | head -n1 | sed 's/^/check: /'\n"
        "blkid -s LABEL -o value \"$(findfs LABEL=METADATA)\" | sed 's/^/check: blkid /'\n"
        "mkdir -p /mnt/cd /mnt/meta\n"
        'mount -t iso9660 -o ro /dev/sr0 /mnt/cd && echo "check: cdrom $(cat /mnt/cd/hello.txt)"\n'
        "meta=$(findfs LABEL=METADATA)\n"
        'mount -t vfat "$meta" /mnt/meta && echo "check: vfat $(cat /mnt/meta/hello.txt)"\n',
        encoding="utf-8",
    )
    check.chmod(0o755)
    return dest


def test_ide_root_by_label_with_swap_cdrom_vfat_disk_and_tools(
    testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    swap_uuid = str(uuid.uuid4())
    tree = _variant_tree(testguest_rootfs, tmp_path / "tree", swap_uuid)
    root_fs = flat_ext4(tree, tmp_path / "root.ext4", label="variantroot")
    swap = tmp_path / "swap.img"
    swap.write_bytes(b"\0" * (32 << 20))
    run("mkswap", "-U", swap_uuid, swap)
    payload = tmp_path / "hello.txt"
    payload.write_text("from-the-cd\n")
    iso = tmp_path / "seed.iso"
    run("xorriso", "-as", "mkisofs", "-quiet", "-V", "CONTEXT", "-J", "-r", "-o", iso, payload)
    vfat = tmp_path / "meta.img"
    run("mkfs.vfat", "-C", "-n", "METADATA", vfat, "4096")
    payload.write_text("from-the-vfat-disk\n")
    run("mcopy", "-i", vfat, payload, "::hello.txt")

    lines: list[str] = []
    log = tmp_path / f"console-{uuid.uuid4().hex}.log"
    result = boot(
        root_fs.path,
        format="raw",
        disk_bus="ide",
        timeout=BOOT_TIMEOUT,
        expect=testguest_rootfs.marker,
        drives=[swap, Drive(vfat, format="raw", bus="virtio")],
        cdroms=[iso],
        console_log=log,
        on_line=lines.append,
        direct_kernel=_direct(testguest_rootfs, "LABEL=variantroot"),
    )
    assert result.matched_line == testguest_rootfs.marker_line(
        hostname="fromrclocal", swaps=1, root="/dev/sda"
    )
    checks = [line.removeprefix("check: ") for line in lines if line.startswith("check: ")]
    assert "ssh-keygen ok" in checks
    assert any(c.startswith("sfdisk from util-linux") for c in checks)
    assert any(c.startswith("resize2fs ") for c in checks)
    assert "blkid METADATA" in checks
    assert "cdrom from-the-cd" in checks
    assert "vfat from-the-vfat-disk" in checks  # needs nls_ascii (Debian default iocharset)
    assert checks[-1] == "rc.local ran"  # after the S* scripts, before the marker
    assert _qemu_processes(log) == []
    # Without snapshot the guest wrote to its disk: the host keys are there now.
    listing = run("debugfs", "-R", "ls -l /etc/ssh", root_fs.path).stdout.decode()
    assert "ssh_host_ed25519_key" in listing


def test_missing_root_device_is_reported_by_the_initramfs(
    testguest_rootfs: TestGuest, testguest_flat_ext4: FlatFilesystem, tmp_path: Path
) -> None:
    result = boot(
        testguest_flat_ext4.path,
        format="raw",
        timeout=BOOT_TIMEOUT,
        snapshot=True,
        direct_kernel=_direct(
            testguest_rootfs, "UUID=00000000-0000-0000-0000-000000000000", poweroff=True, extra="rootdelay=2"
        ),
    )
    assert result.exit_status == 0
    assert any(
        "imagewright-initramfs: error: root device UUID=00000000" in line for line in result.last_lines
    )


#: A boot sector that prints one line on COM1 and then halts for ever (no isa-debug-exit): a guest
#: whose console speaks at once and never says what is expected. SeaBIOS boots it in a second
#: or two under TCG, where the test guest's kernel prints its first line after 5-12 s.
SILENT_AFTER_ONE_LINE_SOURCE = r"""
.code16
.globl _start
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw $0x7c00 + (message - _start), %si
    movw $0x3f8, %dx
next:
    lodsb
    testb %al, %al
    jz halt
    outb %al, %dx
    jmp next
halt:
    hlt
    jmp halt
message:
    .asciz "imagewright-test: one line, then nothing\r\n"
.org 510
.byte 0x55, 0xaa
"""
SILENT_AFTER_ONE_LINE = "imagewright-test: one line, then nothing"


def _silent_after_one_line_disk(directory: Path) -> Path:
    """A 1 MiB raw disk booting ``SILENT_AFTER_ONE_LINE_SOURCE`` (GNU as, objcopy)."""
    source = directory / "silent.S"
    source.write_text(SILENT_AFTER_ONE_LINE_SOURCE)
    run("as", "--64", "-o", directory / "silent.o", source)
    run("objcopy", "-O", "binary", directory / "silent.o", directory / "silent.bin")
    sector = (directory / "silent.bin").read_bytes()
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    disk = directory / "silent.img"
    with disk.open("wb") as out:
        out.write(sector)
        out.truncate(1 << 20)
    return disk


def test_timeout_raises_with_the_last_console_lines(tmp_path: Path) -> None:
    """The guest prints a line at once, then nothing: the boot ends at the time limit with that
    line (the test guest's kernel needed a 40 s limit to be sure of a first line under load)."""
    disk = _silent_after_one_line_disk(tmp_path)
    log = tmp_path / f"console-{uuid.uuid4().hex}.log"
    with pytest.raises(BootTimeoutError) as caught:
        boot(
            disk,
            format="raw",
            timeout=15,
            expect="this text is never printed",
            snapshot=True,
            console_log=log,
        )
    assert isinstance(caught.value, BootError)
    assert "within 15 s" in str(caught.value)
    assert caught.value.result.timed_out and not caught.value.result.matched
    assert caught.value.result.last_lines == (SILENT_AFTER_ONE_LINE,)
    assert caught.value.result.last_lines[-1].strip() in str(caught.value) or "console" in str(caught.value)
    assert _qemu_processes(log) == []


def test_ctrl_c_still_stops_qemu(
    testguest_rootfs: TestGuest, testguest_flat_ext4: FlatFilesystem, tmp_path: Path
) -> None:
    log = tmp_path / f"console-{uuid.uuid4().hex}.log"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        boot(
            testguest_flat_ext4.path,
            format="raw",
            timeout=BOOT_TIMEOUT,
            expect=testguest_rootfs.marker,
            snapshot=True,
            console_log=log,
            on_line=interrupt,
            direct_kernel=_direct(testguest_rootfs, f"UUID={testguest_flat_ext4.uuid}"),
        )
    assert log.exists()
    assert _qemu_processes(log) == []


def test_disk_boot_from_the_image_itself(tmp_path: Path) -> None:
    """No -kernel: SeaBIOS boots the image's own boot sector, which prints and exits."""
    disk = write_probe_disk(tmp_path / "probe.img")
    log = tmp_path / f"console-{uuid.uuid4().hex}.log"
    matched = boot(disk, format="raw", disk_bus="ide", timeout=60, expect="long mode", console_log=log)
    assert matched.matched_line == PROBE_MESSAGE
    ended = boot(disk, format="raw", disk_bus="virtio", timeout=60, snapshot=True)
    assert ended.exit_status == PROBE_EXIT_STATUS and not ended.matched
    assert ended.last_lines == (PROBE_MESSAGE,)
    assert "-kernel" not in ended.argv
    assert _qemu_processes(log) == []


def test_qemu_refusing_to_start_is_a_boot_error(tmp_path: Path) -> None:
    disk = tmp_path / "probe.raw"
    disk.write_bytes(PROBE_BOOT_SECTOR)
    # 16 TiB of guest memory: QEMU itself refuses ("cannot set up guest memory").
    with pytest.raises(BootError, match="QEMU could not start the guest"):
        boot(disk, format="raw", timeout=60, expect="anything", memory_mib=16 << 20)


def test_naming_another_format_than_the_image_has_is_refused_before_qemu(tmp_path: Path) -> None:
    disk = tmp_path / "not-really.qcow2"
    disk.write_bytes(PROBE_BOOT_SECTOR)
    # QEMU's qcow2 (or vmdk ...) driver would read the file by rules the gate did not judge.
    with record_invocations() as calls, pytest.raises(UnsafeImageError, match="is a raw image, not qcow2"):
        boot(disk, format="qcow2", timeout=60, expect="anything")
    assert calls.argvs == []


RESPONDER = r"""
import sys
request = sys.stdin.buffer.readline()
while sys.stdin.buffer.readline() not in (b"\r\n", b"\n", b""):
    pass
path = request.split()[1].decode() if len(request.split()) > 1 else "/"
body = ("served " + path).encode()
sys.stdout.buffer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)
sys.stdout.buffer.flush()
"""


def test_link_local_user_network_reaches_a_guestfwd_command(
    testguest_rootfs: TestGuest, tmp_path: Path
) -> None:
    """DHCP on 169.254.0.0/16 through busybox udhcpc, then HTTP to 169.254.169.254 via guestfwd cmd:."""
    import sys

    from imagewright.programs.qemu_system import GuestForward, NetworkSpec

    responder = tmp_path / "responder.py"
    responder.write_text(RESPONDER, encoding="utf-8")
    tree = tmp_path / "tree"
    shutil.copytree(testguest_rootfs.root, tree, symlinks=True)
    script = tree / "etc/init.d/S40net"
    script.write_text(
        "#!/bin/sh\n"
        # udhcpc spins on 'Network is down' unless the link is up first.
        "ip link set eth0 up\n"
        "udhcpc -i eth0 -n -q -t 5 -T 1 >/dev/null 2>&1\n"
        "echo \"check: dhcp $(ip -4 -o addr show eth0 | awk '{print $4}')\"\n"
        # busybox 1.35's wget crashes with -T; timeout(1) bounds it instead.
        'echo "check: $(timeout 20 wget -q -O - http://169.254.169.254/latest/meta-data/instance-id)"\n',
        encoding="utf-8",
    )
    script.chmod(0o755)
    root_fs = flat_ext4(tree, tmp_path / "root.ext4")
    lines: list[str] = []
    result = boot(
        root_fs.path,
        format="raw",
        timeout=BOOT_TIMEOUT,
        expect=testguest_rootfs.marker,
        snapshot=True,
        on_line=lines.append,
        network=NetworkSpec(
            mode="user",
            link_local=True,
            restrict=True,
            guest_forwards=(
                GuestForward("169.254.169.254", 80, (sys.executable, str(responder)), reads=(responder,)),
            ),
        ),
        direct_kernel=_direct(testguest_rootfs, f"UUID={root_fs.uuid}"),
    )
    assert result.matched
    checks = [line.removeprefix("check: ") for line in lines if line.startswith("check: ")]
    assert "dhcp 169.254.0.15/16" in checks
    assert "served /latest/meta-data/instance-id" in checks


def test_sigterm_to_the_harness_still_stops_qemu(
    testguest_rootfs: TestGuest, testguest_flat_ext4: FlatFilesystem, tmp_path: Path
) -> None:
    """A harness killed with SIGTERM (CI cancelling a job) takes its QEMU with it."""
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / f"console-{uuid.uuid4().hex}.log"
    guest = testguest_rootfs
    kernel = DirectKernel(
        guest.kernel, guest.initrd, guest.kernel_command_line(f"UUID={testguest_flat_ext4.uuid}")
    )
    program = (
        "from pathlib import Path\n"
        "from imagewright.compute.boot import DirectKernel, boot\n"
        f"kernel = DirectKernel(Path({str(kernel.kernel)!r}), Path({str(kernel.initrd)!r}),\n"
        f"                      {kernel.append!r})\n"
        f"boot(Path({str(testguest_flat_ext4.path)!r}), format='raw', timeout=170, expect='never printed',\n"
        f"     snapshot=True, console_log=Path({str(log)!r}), direct_kernel=kernel)\n"
    )
    harness = subprocess.Popen([sys.executable, "-c", program], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and log.stat().st_size > 0 and _qemu_processes(log)):
            assert time.monotonic() < deadline, "QEMU never started writing the console"
            assert harness.poll() is None, harness.stderr.read().decode() if harness.stderr else ""
            time.sleep(0.2)
        harness.send_signal(signal.SIGTERM)
        assert harness.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
    assert _qemu_processes(log) == []
