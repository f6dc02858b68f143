"""What a rootless ``mke2fs -d`` cannot carry, applied afterwards in batched debugfs runs.

``mke2fs -d TREE`` copies a host tree into the new filesystem with each file's host owner,
mode, timestamps, symbolic links, hard links and readable extended attributes. Built without
root, the tree cannot hold what a root filesystem needs: files owned by root or other users,
device nodes (``/dev/null``, ``/dev/console``), and ``security.*``/``trusted.*`` attributes
(``security.capability`` on ``ping``). Those are recorded while the tree is made and put right
in the filesystem with debugfs (verified with e2fsprogs 1.47.0):

- ``sif PATH mode 0100644`` / ``uid N`` / ``gid N``: the whole ``i_mode`` (file type bits
  included), and owners above 65535 (the high 16 bits go to ``l_i_uid_high``);
- ``cd DIR`` + ``mknod NAME c|b MAJOR MINOR`` or ``mknod NAME p``: debugfs links the new inode
  under the *literal* name in its current directory (``mknod /dev/null ...`` would create an
  entry called "/dev/null" in the root directory), and with mode 0000 and owner 0:0 — so the
  mode and owner follow as ``sif`` lines;
- ``ln TARGET PATH`` + ``sif TARGET links_count N``: another name for a device node (debugfs's
  ``ln`` does not count links itself);
- ``ea_set -f VALUEFILE PATH NAME``: an attribute value from a file, so binary values survive
  (``system.posix_acl_*`` values in the Linux xattr format are translated to ext4's on-disk
  form by debugfs, as the kernel does).

Commands run in batches of ``BATCH_COMMANDS`` per debugfs process (one for a small tree); each
command's output is checked — debugfs exits 0 when a command fails.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imagewright.errors import BuildError, InvalidArgumentError
from imagewright.programs import e2fs
from imagewright.programs.e2fs import DebugfsCommand, command

#: Commands per debugfs process: bounded output in memory, few processes for big trees.
BATCH_COMMANDS = 20_000
#: Largest owner id ext4 stores (32 bits; 2^32-1 means "no id").
MAX_ID = 2**32 - 2
#: debugfs's mknod letters.
DEVICE_LETTERS = {stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFIFO: "p"}


@dataclass(slots=True)
class InodeState:
    """Type, permission bits and owner of one inode."""

    file_type: int
    mode: int
    uid: int
    gid: int


@dataclass(slots=True)
class DeviceNode:
    """A character/block device or FIFO to create (it cannot exist in a rootless tree)."""

    state: InodeState
    major: int = 0
    minor: int = 0


@dataclass
class MetadataPlan:
    """Everything to put right after ``mke2fs -d``, keyed by guest path (``/etc/passwd``)."""

    #: Inodes whose mode or owner must change (the state they must end in).
    fixes: dict[str, InodeState] = field(default_factory=dict)
    devices: dict[str, DeviceNode] = field(default_factory=dict)
    #: Extra names for device nodes: link path -> device path.
    device_links: dict[str, str] = field(default_factory=dict)
    #: Extended attributes: path -> {name: value}.
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def forget(self, path: str) -> None:
        """Drop everything recorded for ``path`` (a later archive member replaces it)."""
        self.fixes.pop(path, None)
        self.devices.pop(path, None)
        self.device_links.pop(path, None)
        self.xattrs.pop(path, None)

    @property
    def empty(self) -> bool:
        return not (self.fixes or self.devices or self.device_links or self.xattrs)

    def count(self) -> int:
        return (
            len(self.fixes) + len(self.devices) + len(self.device_links) + sum(map(len, self.xattrs.values()))
        )


def _check_id(value: int, what: str, path: str) -> str:
    if not 0 <= value <= MAX_ID:
        raise BuildError(f"{path} has the {what} {value}, which ext4 cannot store.")
    return str(value)


def _state_commands(path: str, state: InodeState) -> list[DebugfsCommand]:
    return [
        command("sif", path, "mode", f"0{state.file_type | (state.mode & 0o7777):o}"),
        command("sif", path, "uid", _check_id(state.uid, "owner", path)),
        command("sif", path, "gid", _check_id(state.gid, "group", path)),
    ]


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    return parent or "/", name


def plan_commands(plan: MetadataPlan, values_dir: Path) -> Iterator[tuple[DebugfsCommand, str]]:
    """The debugfs commands of ``plan`` and what each is for; attribute values go to ``values_dir``.

    Values are stored once per distinct value (a tree labelled by SELinux repeats a few labels
    on every file).
    """
    for path, node in plan.devices.items():
        parent, name = _split(path)
        letter = DEVICE_LETTERS[node.state.file_type]
        args = [name, letter] if letter == "p" else [name, letter, str(node.major), str(node.minor)]
        yield command("cd", parent), f"create {path}"
        yield command("mknod", *args), f"create {path}"
    if plan.devices:
        yield command("cd", "/"), "return to the root directory"
    links: dict[str, int] = {}
    for path, target in plan.device_links.items():
        yield command("ln", target, path), f"link {path} to {target}"
        links[target] = links.get(target, 1) + 1
    for target, count in links.items():
        yield command("sif", target, "links_count", str(count)), f"count the links of {target}"
    for path, node in plan.devices.items():
        for cmd in _state_commands(path, node.state):
            yield cmd, f"set the mode and owner of {path}"
    for path, state in plan.fixes.items():
        for cmd in _state_commands(path, state):
            yield cmd, f"set the mode and owner of {path}"
    stored: dict[bytes, Path] = {}
    for path, attributes in plan.xattrs.items():
        for name, value in attributes.items():
            digest = hashlib.sha256(value).digest()
            value_file = stored.get(digest)
            if value_file is None:
                value_file = values_dir / f"v{len(stored)}"
                value_file.write_bytes(value)
                stored[digest] = value_file
            yield command("ea_set", "-f", str(value_file), path, name), f"set the attribute {name} of {path}"


def _accepted(cmd: DebugfsCommand, output: bytes) -> bool:
    if cmd.verb == "mknod":
        return output.startswith(b"Allocated inode: ") and output.count(b"\n") <= 1
    return not output.strip()


def apply_metadata(device: str, plan: MetadataPlan, scratch: Path) -> int:
    """Apply ``plan`` to the ext2/3/4 filesystem at ``device`` (``IMAGE?offset=N``); commands run."""
    if plan.empty:
        return 0
    values_dir = scratch / "xattr-values"
    values_dir.mkdir(mode=0o700, exist_ok=True)
    batch: list[tuple[DebugfsCommand, str]] = []
    total = 0
    try:
        commands = plan_commands(plan, values_dir)
        for item in commands:
            try:
                item[0].line()
            except InvalidArgumentError:
                raise BuildError(
                    f"debugfs cannot name a path in the source ({item[1]}): file names with line "
                    "breaks cannot be given owners or attributes."
                ) from None
            batch.append(item)
            # A device node's "cd" and "mknod" stay in one batch: cd state does not carry over.
            if len(batch) >= BATCH_COMMANDS and item[0].verb != "cd":
                total += _run(device, batch)
                batch = []
        if batch:
            total += _run(device, batch)
    finally:
        for value_file in values_dir.iterdir():
            value_file.unlink(missing_ok=True)
        values_dir.rmdir()
    return total


def _run(device: str, batch: list[tuple[DebugfsCommand, str]]) -> int:
    outputs = e2fs.run_debugfs(device, [cmd for cmd, _ in batch], writable=True)
    for (cmd, what), output in zip(batch, outputs, strict=True):
        if not _accepted(cmd, output):
            first = next(
                (line for line in output.decode("utf-8", "replace").splitlines() if line.strip()), ""
            )
            raise BuildError(
                f"debugfs could not {what} in the new filesystem: {first.strip() or 'no output'}."
            )
    return len(batch)
