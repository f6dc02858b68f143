"""Guest disk images for tests, built with the real tools (mke2fs -d, sfdisk, qemu-img).

``sysprep_tree`` writes a directory tree that looks like a used Linux guest (host keys,
persistent-net rules, MAC addresses in network configs, logs and rotated logs, histories,
leases, package caches, a machine-id). The builders turn a tree into a flat ext4 image, an
ext4 partition of an MBR or GPT disk, or any of those converted to qcow2/vmdk. The
checkers read images back with debugfs and e2fsck directly (not through imagewright).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.tools import qemu_img, run, sfdisk

MIB = 1024 * 1024
PARTITION_START = 1 * MIB  # sector 2048, where sfdisk puts the first partition

ALICE = 1000
MAC = "52:54:00:12:34:56"


@dataclass(frozen=True)
class GuestImage:
    """An image file and where its guest filesystem starts (bytes)."""

    path: Path
    offset: int
    fmt: str = "raw"

    @property
    def device(self) -> str:
        return f"{self.path}?offset={self.offset}" if self.offset else str(self.path)


def write(root: Path, rel: str, content: str | bytes, mode: int = 0o644, owner: int = 0) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)
    os.chown(path, owner, owner)
    return path


def link(root: Path, rel: str, target: str) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def sysprep_tree(root: Path, *, init: str = "systemd") -> Path:
    """A used guest: everything sysprep removes, and neighbours it must leave alone."""
    write(root, "etc/hostname", "used-vm\n")
    write(root, "etc/os-release", 'ID=debian\nVERSION_ID="12"\n')
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    write(root, "etc/passwd-", "root:x:0:0:root:/root:/bin/bash\n")
    write(
        root,
        "etc/shadow",
        "root:$6$salt$hashhashhash:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
        0o640,
    )
    write(root, "etc/shadow-", "root:$6$old$hash:19000:0:99999:7:::\n", 0o640)
    write(root, "etc/fstab", "LABEL=root / ext4 defaults 0 1\n")
    write(root, "etc/modules", "# /etc/modules: kernel modules to load at boot time.\nloop\n")
    write(root, "etc/resolv.conf", "nameserver 10.0.2.3\n")
    # SSH: host keys go, the configuration stays.
    for kind in ("rsa", "ecdsa", "ed25519"):
        write(root, f"etc/ssh/ssh_host_{kind}_key", f"-----PRIVATE {kind}-----\n", 0o600)
        write(root, f"etc/ssh/ssh_host_{kind}_key.pub", f"ssh-{kind} AAAA host\n")
    write(root, "etc/ssh/sshd_config", "PermitRootLogin prohibit-password\n")
    # udev persistent net rules.
    write(
        root,
        "etc/udev/rules.d/70-persistent-net.rules",
        f'SUBSYSTEM=="net", ATTR{{address}}=="{MAC}", NAME="eth0"\n',
    )
    write(root, "etc/udev/rules.d/99-local.rules", "# local rules stay\n")
    write(root, "lib/udev/rules.d/75-persistent-net-generator.rules", "# generator\n")
    # MAC addresses in network configuration.
    write(
        root,
        "etc/sysconfig/network-scripts/ifcfg-eth0",
        f'DEVICE=eth0\nHWADDR={MAC}\nBOOTPROTO=dhcp\nMACADDR="{MAC}"\nONBOOT=yes\n',
    )
    write(root, "etc/sysconfig/network-scripts/ifcfg-lo", "DEVICE=lo\nIPADDR=127.0.0.1\n")
    write(
        root,
        "etc/netplan/50-cloud-init.yaml",
        "network:\n"
        "    ethernets:\n"
        "        eth0:\n"
        "            dhcp4: true\n"
        "            match:\n"
        f"                macaddress: {MAC}\n"
        "            set-name: eth0\n"
        "    version: 2\n",
        0o600,
    )
    write(
        root,
        "etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
        "[connection]\nid=Wired connection 1\ntype=ethernet\n\n"
        f"[ethernet]\nmac-address={MAC}\n\n[ipv4]\nmethod=auto\n",
        0o600,
    )
    # Identity.
    write(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
    write(root, "var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n")
    write(root, "var/lib/systemd/random-seed", os.urandom(512), 0o600)
    # Logs: current ones are emptied, rotated ones removed.
    write(root, "var/log/syslog", "Jan  1 boot\n" * 50, 0o640)
    write(root, "var/log/syslog.1", "older\n", 0o640)
    write(root, "var/log/syslog.2.gz", b"\x1f\x8b old", 0o640)
    write(root, "var/log/messages-20240101", "dated\n", 0o600)
    write(root, "var/log/dmesg.old", "old dmesg\n")
    write(root, "var/log/apt/history.log", "Start-Date: 2024\n")
    write(root, "var/log/apt/history.log.1.gz", b"\x1f\x8b hist")
    write(root, "var/log/wtmp", b"\0" * 384, 0o664)
    write(
        root,
        "var/log/journal/0123456789abcdef0123456789abcdef/system.journal",
        b"LPKSHHRH" + b"\0" * 100,
        0o640,
    )
    # Histories.
    write(root, "root/.bash_history", "ls\nssh-keygen\n", 0o600)
    write(root, "home/alice/.bash_history", "vim notes\n", 0o600, ALICE)
    write(root, "home/alice/notes.txt", "keep me\n", 0o644, ALICE)
    # Temporary files, with awkward names.
    write(root, "tmp/junk.txt", "junk\n")
    write(root, 'tmp/dir with spaces/it\'s "quoted".txt', "q\n")
    write(root, "tmp/.X11-unix/X0", "")
    write(root, "var/tmp/cache.bin", b"\x00\x01")
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    # DHCP leases.
    write(root, "var/lib/dhcp/dhclient.eth0.leases", "lease { fixed-address 10.0.2.15; }\n")
    write(root, "var/lib/dhclient/dhclient-eth0.leases", "lease {}\n")
    write(root, "var/lib/NetworkManager/internal-0123-eth0.lease", "ADDRESS=10.0.2.15\n")
    write(root, "var/lib/NetworkManager/NetworkManager.state", "[main]\nNetworkingEnabled=true\n")
    # Package caches.
    write(root, "var/cache/apt/archives/hello_2.10_amd64.deb", b"!<arch>\n" + b"x" * 1000)
    write(root, "var/cache/apt/archives/partial/curl_8.0_amd64.deb", b"!<arch>\n")
    write(root, "var/cache/apt/archives/lock", "", 0o640)
    write(root, "var/cache/apt/pkgcache.bin", b"\x00" * 64)
    write(root, "var/cache/dnf/fedora-1234/packages/bash-5.2.rpm", b"\xed\xab\xee\xdb")
    # init system
    if init == "systemd":
        write(root, "lib/systemd/systemd", b"\x7fELF", 0o755)
        link(root, "sbin/init", "/lib/systemd/systemd")
        (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    elif init == "sysvinit-rclocal":
        write(root, "sbin/init", b"\x7fELF", 0o755)
        write(root, "etc/inittab", "id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\n")
        write(root, "etc/init.d/rc.local", "#!/bin/sh\n# runs /etc/rc.local\n", 0o755)
        write(root, "etc/rc.local", "#!/bin/sh -e\n#\n# rc.local\n\necho hello\n\nexit 0\n", 0o755)
    elif init == "sysvinit":
        write(root, "sbin/init", b"\x7fELF", 0o755)
        write(root, "etc/init.d/networking", "#!/bin/sh\n", 0o755)
        (root / "etc/rcS.d").mkdir(parents=True)
        (root / "etc/rc2.d").mkdir(parents=True)
        link(root, "etc/rcS.d/S10networking", "../init.d/networking")
    elif init == "busybox":
        write(root, "bin/busybox", b"\x7fELF", 0o755)
        link(root, "sbin/init", "../bin/busybox")
        write(root, "etc/inittab", "::sysinit:/etc/init.d/rcS\n::respawn:/sbin/getty 115200 ttyS0\n")
        write(root, "etc/init.d/rcS", "#!/bin/sh\nmount -a\n", 0o755)
    else:
        raise ValueError(init)
    return root


def flat_ext4(tree: Path, out: Path, size_mib: int = 32, fs_type: str = "ext4") -> GuestImage:
    run("mke2fs", "-q", "-F", "-t", fs_type, "-L", "root", "-d", tree, out, f"{size_mib}M")
    return GuestImage(out, 0)


def partitioned_ext4(
    tree: Path,
    out: Path,
    *,
    table: str = "dos",
    size_mib: int = 48,
    fs_type: str = "ext4",
    boot_tree: Path | None = None,
) -> GuestImage:
    """Partition 1: a small ext2 "/boot" (empty but for ``grub/``; or made from ``boot_tree`` and
    labelled ``boot``); partition 2: the root filesystem from ``tree``."""
    with out.open("wb") as f:
        f.truncate(size_mib * MIB)
    boot_size = 8 * MIB
    root_start = PARTITION_START + boot_size
    root_size = (size_mib - 2) * MIB - boot_size
    if table == "gpt":
        script = (
            "label: gpt\n"
            f"start=2048, size={boot_size // 512}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
            f"start={root_start // 512}, size={root_size // 512}, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n"
        )
    else:
        script = (
            f"label: dos\nstart=2048, size={boot_size // 512}, type=83\nstart={root_start // 512}, type=83\n"
        )
        root_size = size_mib * MIB - root_start
    sfdisk(out, script)
    empty = boot_tree or out.parent / f"{out.name}.boot-tree"
    empty.mkdir(exist_ok=True)
    (empty / "grub").mkdir(exist_ok=True)
    run(
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext2",
        *(["-L", "boot"] if boot_tree is not None else []),
        "-E",
        f"offset={PARTITION_START}",
        "-d",
        empty,
        out,
        f"{boot_size // 1024}k",
    )
    run(
        "mke2fs",
        "-q",
        "-F",
        "-t",
        fs_type,
        "-L",
        "root",
        "-E",
        f"offset={root_start}",
        "-d",
        tree,
        out,
        f"{root_size // 1024}k",
    )
    return GuestImage(out, root_start)


def converted(image: GuestImage, fmt: str, out: Path, *options: str) -> GuestImage:
    args = ["convert", "-f", "raw", "-O", fmt]
    if options:
        args += ["-o", ",".join(options)]
    qemu_img(*args, image.path, out)
    return GuestImage(out, image.offset, fmt)


def to_raw(image: GuestImage, out: Path) -> GuestImage:
    """A raw copy of any image (to read it back with e2fsprogs)."""
    if image.fmt == "raw":
        return image
    qemu_img("convert", "-f", image.fmt, "-O", "raw", image.path, out)
    return GuestImage(out, image.offset)


def debugfs(image: GuestImage, request: str) -> str:
    proc = run("debugfs", "-R", request, image.device)
    return proc.stdout.decode("utf-8", "replace")


def cat(image: GuestImage, path: str) -> bytes:
    return run("debugfs", "-R", f'cat "{path}"', image.device).stdout


def listing(image: GuestImage, path: str) -> dict[str, tuple[int, int, int, int]]:
    """``ls -p``: name -> (mode with type bits, uid, gid, size)."""
    out = run("debugfs", "-R", f'ls -p "{path}"', image.device).stdout.decode()
    result: dict[str, tuple[int, int, int, int]] = {}
    for line in out.splitlines():
        if line.startswith("/"):
            _, _ino, mode, uid, gid, name, size, _ = line.split("/")
            if name not in (".", ".."):
                result[name] = (int(mode, 8), int(uid), int(gid), int(size or 0))
    return result


def stat_of(image: GuestImage, path: str) -> str:
    return run("debugfs", "-R", f'stat "{path}"', image.device).stdout.decode("utf-8", "replace")


def e2fsck_clean(image: GuestImage) -> tuple[bool, str]:
    proc = run("e2fsck", "-fn", image.device, check=False)
    return proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


Manifest = dict[str, tuple[str, int, int, int, str]]


def manifest(image: GuestImage, workdir: Path) -> Manifest:
    """Every path of the guest -> (type, mode, uid, gid, sha256 or link target), via rdump."""
    out = workdir / f"rdump-{os.urandom(4).hex()}"
    out.mkdir()
    run("debugfs", "-R", f'rdump / "{out}"', image.device)
    result: Manifest = {}
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = "/" + str(full.relative_to(out))
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("link", 0o777, st.st_uid, st.st_gid, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, "")
            else:
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                result[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
    return result


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
