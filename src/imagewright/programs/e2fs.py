"""e2fsprogs (Debian ``e2fsprogs``): debugfs, mke2fs, e2fsck, resize2fs, tune2fs, dumpe2fs.

All of them reach a filesystem that sits inside a partition of an image file in place:
mke2fs through ``-E offset=BYTES``, the others through the device name
``"IMAGE?offset=BYTES"`` (libext2fs splits the name at the first '?' and hands the rest to the
unix I/O manager as options). Verified with e2fsprogs 1.47.0: ``debugfs -w``, ``e2fsck -fn``,
``dumpe2fs -h``, ``tune2fs -L`` and ``resize2fs`` all work on ``img?offset=1048576``.
Because of that split, an image path that itself contains '?' cannot be named directly;
``device_name`` refuses it and callers hand e2fsprogs a symlink with a plain name instead.

debugfs is driven in batches: one run reads a command file (``-f``) and executes every line.
Its command language is MIT's ``ss`` library: words split at spaces and tabs, a double-quoted
word may contain anything but NUL and line breaks, and ``""`` inside quotes is one literal
quote (lib/ss/parse.c). A line is at most 8 KiB (debugfs reads it with ``fgets`` into
BUFSIZ). debugfs exits 0 when a command fails (it counts only unknown commands), so success is
decided by reading each command's own output: ``run_debugfs`` separates the outputs with marker
commands that carry a random token, which a file name in the guest cannot predict.

NOTE: every program here runs in the sandbox (``programs/runner.py``) and sees the image file
of its device name (the part before the first '?', where libext2fs splits it:
lib/ext2fs/unix_io.c), read-only unless it writes, and nothing else of the host: not the
other files next to the image, not the host's block devices (a crafted superblock naming an
external journal by UUID sends e2fsck through blkid to every device it can find), not
/etc. debugfs also sees the host files its commands name, by verb (``_host_files``: ``write``
and ``ea_set -f`` read one, ``dump`` and ``ea_get -f`` write one); a verb not listed there
sees none, so ``open``, ``logdump -f`` or ``rdump`` cannot reach a host file. mke2fs reads
``/etc/mke2fs.conf`` (the host's defaults) and its ``-d`` tree; e2fsck reads
``/etc/e2fsck.conf`` when there is one.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import GuestFilesystemError, InvalidArgumentError, ProgramError
from imagewright.programs.runner import Sandbox, run_program, start_program, stop_program, telling_line

#: Longest command line we hand debugfs (its own buffer is 8192 bytes including the newline).
MAX_COMMAND_BYTES = 8000

#: A debugfs run on a small guest takes milliseconds; the bound stops a crafted filesystem
#: that sends debugfs into a loop from hanging imagewright.
DEBUGFS_TIMEOUT = 900.0
_FSCK_TIMEOUT = 3600.0

#: The host's e2fsprogs configuration: mke2fs's defaults (features, inode sizes), e2fsck's options.
_MKE2FS_CONFIG = ("/etc/mke2fs.conf",)
_E2FSCK_CONFIG = tuple(path for path in ("/etc/e2fsck.conf",) if os.path.exists(path))


def device_name(image: str | os.PathLike[str], offset: int = 0) -> str:
    """The e2fsprogs device name of a filesystem at byte ``offset`` of ``image``."""
    text = os.fspath(image)
    if "?" in text:
        raise InvalidArgumentError(
            f"e2fsprogs cannot open '{text}' because its name contains '?'; use a link with a plain name."
        )
    if "\0" in text:
        raise InvalidArgumentError("An image path cannot contain a NUL character.")
    if offset < 0:
        raise InvalidArgumentError("A filesystem offset cannot be negative.")
    text = os.path.abspath(text)
    return f"{text}?offset={offset}" if offset else text


def _device_parts(device: str) -> tuple[str, str]:
    """(absolute image path, the '?options' suffix or ''), split where libext2fs splits."""
    path, sep, options = device.partition("?")
    if not path or "\0" in device:
        raise InvalidArgumentError(f"'{device}' is not an e2fsprogs device name.")
    return os.path.abspath(path), sep + options


def _device_sandbox(
    device: str, *, writable: bool, reads: Sequence[str] = (), writes: Sequence[str] = ()
) -> tuple[str, Sandbox]:
    """The absolute device name to pass, and a sandbox showing its image file (and the rest)."""
    image, options = _device_parts(device)
    if writable:
        return image + options, Sandbox.of(reads=reads, writes=[image, *writes])
    return image + options, Sandbox.of(reads=[image, *reads], writes=writes)


def quote(arg: str) -> str:
    """One debugfs word holding ``arg`` exactly (see the module docstring for the rules)."""
    if "\0" in arg or "\n" in arg or "\r" in arg:
        raise InvalidArgumentError("A name given to debugfs cannot contain a NUL character or a line break.")
    return '"' + arg.replace('"', '""') + '"'


@dataclass(frozen=True)
class DebugfsCommand:
    """One debugfs request: the verb (``stat``, ``write``, ``sif`` ...) and its words."""

    verb: str
    args: tuple[str, ...] = ()

    def line(self) -> str:
        text = " ".join([self.verb, *(quote(a) for a in self.args)])
        if len(text.encode("utf-8", "surrogateescape")) > MAX_COMMAND_BYTES:
            raise InvalidArgumentError("A path handed to debugfs is longer than it can read in one line.")
        return text


def command(verb: str, *args: str) -> DebugfsCommand:
    return DebugfsCommand(verb, tuple(args))


def _host_files(cmd: DebugfsCommand) -> tuple[list[str], list[str]]:
    """(host files ``cmd`` reads, host files it writes): what its sandbox shows, by verb.

    ``write HOST GUEST``, ``dump [-p] GUEST HOST``, ``ea_set ... -f HOST ...`` and
    ``ea_get ... -f HOST ...`` (debugfs/debugfs.c, debugfs/dump.c, debugfs/xattrs.c). Any
    other verb sees no host file at all.
    """
    args = cmd.args
    if cmd.verb == "write" and len(args) == 2:
        return [args[0]], []
    if cmd.verb == "dump" and len(args) >= 2:
        return [], [args[-1]]
    if cmd.verb in ("ea_set", "ea_get") and "-f" in args[:-1]:
        host = args[args.index("-f") + 1]
        return ([host], []) if cmd.verb == "ea_set" else ([], [host])
    return [], []


def _encode(text: str) -> bytes:
    # Guest names are bytes; imagewright carries them as str with surrogate escapes.
    return text.encode("utf-8", "surrogateescape")


def run_debugfs(
    device: str,
    commands: Sequence[DebugfsCommand],
    *,
    writable: bool = False,
    timeout: float = DEBUGFS_TIMEOUT,
) -> list[bytes]:
    """Run ``commands`` in one debugfs process; return each command's own output (bytes).

    Raises GuestFilesystemError when debugfs cannot open the filesystem at all; errors of
    single commands are in their outputs, for the caller to judge.
    """
    if not commands:
        return []
    token = f".imagewright-{secrets.token_hex(12)}"
    markers = [f"stat {quote('/' + token + '-' + str(i))}" for i in range(len(commands) + 1)]
    lines: list[str] = []
    for marker, cmd in zip(markers, commands, strict=False):
        lines += [marker, cmd.line()]
    lines.append(markers[-1])
    script = b"".join(_encode(line) + b"\n" for line in lines)

    host_reads: list[str] = []
    host_writes: list[str] = []
    for cmd in commands:
        reads, writes = _host_files(cmd)
        host_reads += reads
        host_writes += writes
    with tempfile.TemporaryDirectory(prefix="imagewright-debugfs-") as scratch:
        script_path = Path(scratch) / "commands"
        script_path.write_bytes(script)
        name, sandbox = _device_sandbox(
            device, writable=writable, reads=[str(script_path), *host_reads], writes=host_writes
        )
        argv = ["debugfs"]
        if writable:
            argv.append("-w")
        argv += ["-f", str(script_path), name]
        output, returncode = _run_merged(argv, sandbox, timeout)

    # debugfs makes stdout and stderr unbuffered while it reads a command file
    # (debugfs.c source_file), so with both on one pipe every error follows its command.
    positions: list[tuple[int, int]] = []
    cursor = 0
    for marker in markers:
        echo = b"debugfs: " + _encode(marker) + b"\n"
        start = output.find(echo, cursor)
        if start < 0:
            break
        positions.append((start, start + len(echo)))
        cursor = start + len(echo)
    preamble = output[: positions[0][0]] if positions else output
    _check_preamble(preamble, device)
    if len(positions) != len(markers):
        raise ProgramError(
            f"debugfs stopped before finishing its commands: {telling_line(_text(output[-2000:]))}"
        )
    if returncode != 0:
        raise ProgramError(f"debugfs rejected a command (exit {returncode}): {telling_line(_text(output))}")

    token_bytes = _encode(token)
    outputs: list[bytes] = []
    for i, cmd in enumerate(commands):
        block = output[positions[i][1] : positions[i + 1][0]]
        # The marker's own "not found" complaint comes first; every line of it names the token.
        while block and token_bytes in block.split(b"\n", 1)[0]:
            block = block.split(b"\n", 1)[1] if b"\n" in block else b""
        echo = b"debugfs: " + _encode(cmd.line()) + b"\n"
        if not block.startswith(echo):
            raise ProgramError("debugfs output did not follow its commands; refusing to guess.")
        outputs.append(block[len(echo) :])
    return outputs


def _run_merged(argv: list[str], sandbox: Sandbox, timeout: float) -> tuple[bytes, int]:
    proc = start_program(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, sandbox=sandbox)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_program(proc)
        raise ProgramError(f"debugfs did not finish within {timeout:g} s.") from None
    except BaseException:
        stop_program(proc)
        raise
    return output, proc.returncode


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


_BANNER = re.compile(rb"^(debugfs|e2fsck|dumpe2fs|tune2fs|resize2fs|mke2fs) \d+\.\d+")


def _check_preamble(preamble: bytes, device: str) -> None:
    """Everything debugfs printed before the first command: its banner, or why it failed to open."""
    problems = [
        line.strip() for line in preamble.split(b"\n") if line.strip() and not _BANNER.match(line.strip())
    ]
    if not problems:
        return
    message = _text(problems[0])
    message = message.removeprefix("debugfs: ")
    # "Bad magic number in super-block while trying to open img?offset=1048576"
    message = re.sub(r"\s*while trying to open .*$", "", message)
    raise GuestFilesystemError(f"debugfs cannot open the ext2/3/4 filesystem: {message}")


# --------------------------------------------------------------------------------------------
# e2fsck, dumpe2fs, tune2fs, resize2fs, mke2fs


@dataclass(frozen=True)
class FsckResult:
    """``e2fsck -fn``: ``clean`` when it found nothing to fix (exit 0)."""

    clean: bool
    exit_code: int
    output: str

    def first_problem(self) -> str:
        for line in self.output.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith(("Pass ", "e2fsck ")) and "files (" not in stripped:
                return stripped
        return f"e2fsck exit code {self.exit_code}"


def e2fsck_check(device: str, *, timeout: float = _FSCK_TIMEOUT) -> FsckResult:
    """``e2fsck -fn DEVICE``: a full read-only check. Exit 0 clean, 4 errors left, 8 failed."""
    name, sandbox = _device_sandbox(device, writable=False, reads=_E2FSCK_CONFIG)
    result = run_program(["e2fsck", "-fn", name], timeout=timeout, check=False, sandbox=sandbox)
    if result.returncode >= 8:
        raise ProgramError(
            f"e2fsck could not check the filesystem (exit {result.returncode}): "
            f"{telling_line(result.stderr_text + result.stdout_text)}"
        )
    return FsckResult(result.returncode == 0, result.returncode, result.stdout_text + result.stderr_text)


def e2fsck_replay_journal(device: str, *, timeout: float = _FSCK_TIMEOUT) -> None:
    """Replay a pending journal and nothing else (``e2fsck -p -E journal_only``).

    A filesystem whose journal still holds transactions (feature ``needs_recovery``) must not
    be written by debugfs before the replay: the replay would later overwrite our changes.
    """
    name, sandbox = _device_sandbox(device, writable=True, reads=_E2FSCK_CONFIG)
    result = run_program(
        ["e2fsck", "-p", "-E", "journal_only", name], timeout=timeout, check=False, sandbox=sandbox
    )
    # 0 nothing done, 1 journal replayed (errors corrected); anything else is a failure.
    if result.returncode not in (0, 1):
        raise ProgramError(
            f"e2fsck could not replay the filesystem journal (exit {result.returncode}): "
            f"{telling_line(result.stderr_text + result.stdout_text)}"
        )


def e2fsck_preen(device: str, *, timeout: float = _FSCK_TIMEOUT) -> int:
    """``e2fsck -fp DEVICE``: a forced check that fixes only what is safe to fix unattended.

    resize2fs refuses a filesystem that was not checked since it was last mounted; this is
    that check. Returns 0 (clean) or 1 (problems corrected); raises ProgramError when errors
    are left that need a person (exit 4) or e2fsck failed (8 and above).
    """
    name, sandbox = _device_sandbox(device, writable=True, reads=_E2FSCK_CONFIG)
    result = run_program(["e2fsck", "-fp", name], timeout=timeout, check=False, sandbox=sandbox)
    if result.returncode not in (0, 1):
        raise ProgramError(
            f"e2fsck found problems in the filesystem it cannot fix on its own (exit {result.returncode}): "
            f"{telling_line(result.stderr_text + result.stdout_text)}"
        )
    return result.returncode


@dataclass(frozen=True)
class Superblock:
    """The fields of ``dumpe2fs -h`` imagewright uses, plus all of them as text."""

    block_count: int
    block_size: int
    features: frozenset[str]
    state: str
    label: str
    uuid: str
    fields: Mapping[str, str]

    @property
    def size(self) -> int:
        return self.block_count * self.block_size

    @property
    def needs_recovery(self) -> bool:
        return "needs_recovery" in self.features


def read_superblock(device: str, *, timeout: float = 120.0) -> Superblock:
    """``dumpe2fs -h DEVICE`` parsed."""
    name, sandbox = _device_sandbox(device, writable=False)
    result = run_program(["dumpe2fs", "-h", name], timeout=timeout, check=False, sandbox=sandbox)
    fields: dict[str, str] = {}
    for line in result.stdout_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith(" "):
            fields.setdefault(key.strip(), value.strip())
    if result.returncode != 0 or "Block count" not in fields:
        raise GuestFilesystemError(
            f"dumpe2fs cannot read the ext2/3/4 superblock: {telling_line(result.stderr_text)}"
        )
    try:
        block_count = int(fields["Block count"])
        block_size = int(fields.get("Block size", "0"))
    except ValueError:
        raise GuestFilesystemError("dumpe2fs printed a block count that is not a number.") from None
    label = fields.get("Filesystem volume name", "")
    return Superblock(
        block_count=block_count,
        block_size=block_size,
        features=frozenset(fields.get("Filesystem features", "").split()),
        state=fields.get("Filesystem state", ""),
        label="" if label == "<none>" else label,
        uuid=fields.get("Filesystem UUID", ""),
        fields=fields,
    )


def mke2fs(
    target: str | os.PathLike[str],
    *,
    fs_type: str = "ext4",
    size_bytes: int | None = None,
    offset: int = 0,
    root_dir: str | os.PathLike[str] | None = None,
    label: str | None = None,
    uuid: str | None = None,
    block_size: int | None = None,
    features: Sequence[str] = (),
    timeout: float = 3600.0,
) -> None:
    """``mke2fs -q -F -t TYPE [-E offset=N] [-d ROOT] TARGET [SIZEk]``.

    ``offset`` puts the filesystem at that byte of an image file (a partition's start);
    ``size_bytes`` is then required (the partition's size) and must be a multiple of 1 KiB.
    ``root_dir`` populates it from a host directory, keeping owners and modes.
    """
    if fs_type not in ("ext2", "ext3", "ext4"):
        raise InvalidArgumentError(f"'{fs_type}' is not an ext2/3/4 filesystem type.")
    argv = ["mke2fs", "-q", "-F", "-t", fs_type]
    if label is not None:
        if len(label.encode()) > 16:
            raise InvalidArgumentError("An ext2/3/4 label holds at most 16 bytes.")
        argv += ["-L", label]
    if uuid is not None:
        argv += ["-U", uuid]
    if block_size is not None:
        argv += ["-b", str(block_size)]
    if features:
        argv += ["-O", ",".join(features)]
    if offset:
        if size_bytes is None:
            raise InvalidArgumentError("A filesystem placed at an offset needs an explicit size.")
        argv += ["-E", f"offset={offset}"]
    reads = [path for path in _MKE2FS_CONFIG if os.path.exists(path)]
    if root_dir is not None:
        tree = os.path.abspath(os.fspath(root_dir))
        argv += ["-d", tree]
        reads.append(tree)
    image = os.path.abspath(os.fspath(target))
    argv.append(image)
    if size_bytes is not None:
        if size_bytes % 1024:
            raise InvalidArgumentError("An ext2/3/4 filesystem size must be a whole number of KiB.")
        argv.append(f"{size_bytes // 1024}k")
    run_program(
        argv,
        timeout=timeout,
        what="creating the ext filesystem",
        sandbox=Sandbox.of(reads=reads, writes=[image]),
    )


def resize2fs(device: str, size_bytes: int, *, timeout: float = 3600.0) -> None:
    """``resize2fs DEVICE SIZEk``: grow or shrink to exactly ``size_bytes`` (a multiple of 1 KiB)."""
    if size_bytes <= 0 or size_bytes % 1024:
        raise InvalidArgumentError("A filesystem size must be a positive whole number of KiB.")
    name, sandbox = _device_sandbox(device, writable=True)
    run_program(
        ["resize2fs", name, f"{size_bytes // 1024}K"],
        timeout=timeout,
        what="resizing the ext filesystem",
        sandbox=sandbox,
    )


def tune2fs(device: str, *, label: str | None = None, uuid: str | None = None) -> None:
    """``tune2fs [-L LABEL] [-U UUID] DEVICE``."""
    argv = ["tune2fs"]
    if label is not None:
        argv += ["-L", label]
    if uuid is not None:
        argv += ["-U", uuid]
    if len(argv) == 1:
        return
    name, sandbox = _device_sandbox(device, writable=True)
    argv.append(name)
    run_program(argv, timeout=600.0, what="changing the ext filesystem's label or UUID", sandbox=sandbox)
