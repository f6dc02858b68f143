"""qemu-img (Debian ``qemu-utils``): typed calls with an explicit format on every image.

NOTE: every call names the format of every image it opens (``-f``, ``-O``, ``-F``) and qemu-img
never probes. Probing is how a raw guest disk that *starts with* a qcow2 header written by the
guest becomes a qcow2 image naming ``/etc/shadow`` as its backing file (the classic format
confusion behind CVE-2008-2004 and its successors). The format comes from ``inspect``, which
has already judged the image safe.

NOTE: every path handed to qemu-img is made absolute. qemu treats ``name:rest`` as a protocol
(``nbd:``, ``json:{...}``, ``ssh:``) when the part before the first ':' has no '/', so a file
named ``json:{"driver": ...}`` would be parsed, not opened; an absolute path starts with '/'
and is always a plain file name.

NOTE: every call runs in the sandbox (``programs/runner.py``) with only its own images
visible: the image read (read-only), the image written, and for ``convert_to_nbd`` the NBD
socket. Should a hostile image get past ``inspect``, the backing file, extent or ``json:``
file name it names does not exist for qemu-img ("Could not open ...: No such file or
directory"). qemu-img needs nothing else: no configuration file, no temporary file (also not
with ``-p``; the progress goes to the pipe it was given).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imagewright.errors import InvalidArgumentError, ProgramError
from imagewright.programs.runner import Sandbox, run_program, start_program, stop_program, telling_line

#: ``progress(done_bytes, total_bytes)``, as ``cli.common.ByteProgress`` takes it.
ProgressCallback = Callable[[int, int | None], None]

#: The qemu block drivers imagewright hands to qemu-img as image formats.
KNOWN_FORMATS = frozenset({"raw", "qcow2", "qcow", "vmdk", "vpc", "vhdx", "vdi", "qed", "parallels"})

_OPTION_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

# Metadata-only calls (info, check, create, resize) finish in well under a minute even on a
# busy machine; the bound stops a hostile header from keeping a worker forever.
_METADATA_TIMEOUT = 300.0


def image_path(path: str | os.PathLike[str]) -> str:
    """The absolute form of ``path``, safe from qemu's ``protocol:`` parsing (see module NOTE)."""
    text = os.fspath(path)
    if "\0" in text:
        raise InvalidArgumentError("An image path cannot contain a NUL character.")
    return os.path.abspath(text)


def _check_format(fmt: str) -> str:
    if fmt not in KNOWN_FORMATS:
        raise InvalidArgumentError(
            f"'{fmt}' is not an image format imagewright passes to qemu-img; "
            f"use one of {', '.join(sorted(KNOWN_FORMATS))}."
        )
    return fmt


def format_options(options: Mapping[str, str | int | bool]) -> str:
    """``-o`` text for ``options``: ``key=value`` joined by ',' with value commas doubled.

    qemu's option parser splits on ',' and reads ',,' as a literal comma.
    """
    parts: list[str] = []
    for key, value in options.items():
        if not _OPTION_NAME.match(key):
            raise InvalidArgumentError(f"'{key}' is not a qemu-img option name.")
        text = ("on" if value else "off") if isinstance(value, bool) else str(value)
        if "\0" in text or "\n" in text:
            raise InvalidArgumentError(
                f"The value of the qemu-img option '{key}' contains a control character."
            )
        parts.append(f"{key}={text.replace(',', ',,')}")
    return ",".join(parts)


def info(path: str | os.PathLike[str], fmt: str) -> dict[str, Any]:
    """``qemu-img info --output=json -f FMT PATH`` as a dict (keys as qemu writes them).

    Useful keys: ``virtual-size``, ``actual-size``, ``cluster-size``, ``format-specific``
    (qcow2: ``data.compat``, ``data.compression-type``, ``data.refcount-bits``,
    ``data.lazy-refcounts``, ``data.extended-l2``; vmdk: ``data.create-type``,
    ``data.extents[].compressed``).
    """
    image = image_path(path)
    result = run_program(
        ["qemu-img", "info", "--output=json", "-f", _check_format(fmt), image],
        timeout=_METADATA_TIMEOUT,
        what=f"reading the {fmt} header of {os.fspath(path)}",
        sandbox=Sandbox(reads=(image,)),
    )
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise ProgramError("qemu-img info printed something that is not JSON.") from None
    if not isinstance(data, dict):
        raise ProgramError("qemu-img info printed JSON that is not an object.")
    return data


def virtual_size(path: str | os.PathLike[str], fmt: str) -> int:
    size = info(path, fmt).get("virtual-size")
    if not isinstance(size, int) or size < 0:
        raise ProgramError("qemu-img info did not report a virtual size.")
    return size


def create(
    path: str | os.PathLike[str],
    fmt: str,
    size: int,
    options: Mapping[str, str | int | bool] | None = None,
) -> None:
    """``qemu-img create -f FMT [-o OPTIONS] PATH SIZE`` (size in bytes)."""
    if size < 0:
        raise InvalidArgumentError("An image size cannot be negative.")
    argv = ["qemu-img", "create", "-q", "-f", _check_format(fmt)]
    if options:
        argv += ["-o", format_options(options)]
    image = image_path(path)
    argv += [image, str(size)]
    run_program(
        argv, timeout=_METADATA_TIMEOUT, what=f"creating {os.fspath(path)}", sandbox=Sandbox(writes=(image,))
    )


def resize(path: str | os.PathLike[str], fmt: str, size: int, *, shrink: bool = False) -> None:
    """``qemu-img resize -f FMT [--shrink] PATH SIZE`` (absolute size in bytes)."""
    if size < 0:
        raise InvalidArgumentError("An image size cannot be negative.")
    argv = ["qemu-img", "resize", "-q", "-f", _check_format(fmt)]
    if shrink:
        argv.append("--shrink")
    image = image_path(path)
    argv += [image, str(size)]
    run_program(
        argv, timeout=_METADATA_TIMEOUT, what=f"resizing {os.fspath(path)}", sandbox=Sandbox(writes=(image,))
    )


@dataclass(frozen=True)
class CheckResult:
    """What ``qemu-img check`` found. ``supported`` is False for formats without checks (raw, vpc)."""

    supported: bool
    corruptions: int = 0
    leaks: int = 0
    allocated_clusters: int | None = None
    compressed_clusters: int | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.corruptions == 0 and self.leaks == 0


# qemu-img check exit codes (qemu-img.c): 0 clean, 1 check not completed, 2 corruptions,
# 3 leaked clusters only, 63 the format does not support checks.
_CHECK_UNSUPPORTED = 63


def check(path: str | os.PathLike[str], fmt: str) -> CheckResult:
    """``qemu-img check --output=json -f FMT PATH``; never repairs."""
    image = image_path(path)
    result = run_program(
        ["qemu-img", "check", "--output=json", "-f", _check_format(fmt), image],
        timeout=_METADATA_TIMEOUT,
        check=False,
        sandbox=Sandbox(reads=(image,)),
    )
    if result.returncode == _CHECK_UNSUPPORTED:
        return CheckResult(supported=False)
    if result.returncode not in (0, 2, 3):
        raise ProgramError(
            f"qemu-img check could not check {os.fspath(path)} (exit {result.returncode}): "
            f"{telling_line(result.stderr_text)}"
        )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise ProgramError("qemu-img check printed something that is not JSON.") from None
    if not isinstance(report, dict):
        raise ProgramError("qemu-img check printed JSON that is not an object.")

    def count(key: str) -> int:
        value = report.get(key, 0)
        return value if isinstance(value, int) else 0

    def optional(key: str) -> int | None:
        value = report.get(key)
        return value if isinstance(value, int) else None

    return CheckResult(
        supported=True,
        corruptions=count("corruptions") + count("check-errors"),
        leaks=count("leaks"),
        allocated_clusters=optional("allocated-clusters"),
        compressed_clusters=optional("compressed-clusters"),
        report=report,
    )


@dataclass(frozen=True)
class NbdSource:
    """A disk this process serves to qemu-img over NBD on the Unix socket ``socket_path``
    (``ops/convert/nbd_source.py``: a decompressed stream, read front to back)."""

    socket_path: str
    #: What to call it in messages (the file the stream comes from).
    label: str

    @property
    def url(self) -> str:
        return _nbd_url(self.socket_path)


def _nbd_url(socket_path: str) -> str:
    if not os.path.isabs(socket_path) or any(c in socket_path for c in "?&#\0"):
        raise InvalidArgumentError("The NBD socket path must be absolute and plain.")
    return f"nbd+unix:///?socket={socket_path}"


def convert(
    src: str | os.PathLike[str] | NbdSource,
    src_fmt: str,
    dst: str | os.PathLike[str],
    dst_fmt: str,
    *,
    options: Mapping[str, str | int | bool] | None = None,
    compress: bool = False,
    progress: ProgressCallback | None = None,
    total_bytes: int | None = None,
    durable: bool = True,
) -> None:
    """``qemu-img convert -f SRC_FMT -O DST_FMT [-o OPTIONS] [-c] SRC DST`` with progress.

    ``durable`` False: ``-t unsafe``, the output's flushes ignored (qemu-img(1), cache modes) —
    for a scratch file read back at once and thrown away, which need not wait for the disk.

    ``progress(done, total)`` is called as qemu-img reports percentages; ``total_bytes``
    (the virtual size, when the caller knows it) turns them into bytes. The output is
    written sparse (qemu-img's default: zero runs become holes or unallocated clusters).
    ``src`` may be an ``NbdSource`` (then ``src_fmt`` must be raw: qemu-img reads it in order).
    """
    if isinstance(src, NbdSource) and src_fmt != "raw":
        raise InvalidArgumentError("A streamed NBD source is read as raw only.")
    argv = ["qemu-img", "convert", "-f", _check_format(src_fmt), "-O", _check_format(dst_fmt)]
    if options:
        argv += ["-o", format_options(options)]
    if compress:
        argv.append("-c")
    if not durable:
        argv += ["-t", "unsafe"]
    if progress is not None:
        argv.append("-p")
    target = image_path(dst)
    if isinstance(src, NbdSource):
        # The socket itself is bound into the sandbox (connect() works through a bind mount).
        source, label = src.url, src.label
        sandbox = Sandbox(writes=(src.socket_path, target))
    else:
        source, label = image_path(src), os.fspath(src)
        sandbox = Sandbox(reads=(source,), writes=(target,))
    argv += [source, target]
    what = f"converting {label} from {src_fmt} to {dst_fmt}"
    if progress is None:
        run_program(argv, what=what, sandbox=sandbox)
        return
    _convert_with_progress(argv, sandbox, progress, total_bytes, what)


def _convert_with_progress(
    argv: list[str], sandbox: Sandbox, progress: ProgressCallback, total_bytes: int | None, what: str
) -> None:
    # stderr goes to a file so that reading stdout (the progress) can never block on a full
    # stderr pipe; the file is read once qemu-img has finished.
    with tempfile.TemporaryFile() as errors:
        proc = start_program(argv, stdout=subprocess.PIPE, stderr=errors.fileno(), sandbox=sandbox)
        try:
            assert proc.stdout is not None
            pending = b""
            while True:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                pending += chunk
                # qemu-img redraws "    (12.34/100%)" with '\r'; keep only the unfinished tail.
                *complete, pending = re.split(rb"[\r\n]", pending)
                for piece in complete:
                    _report_progress(piece, progress, total_bytes)
            _report_progress(pending, progress, total_bytes)
            returncode = proc.wait()
        except BaseException:
            stop_program(proc)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        if returncode != 0:
            errors.seek(0)
            text = errors.read(64 * 1024).decode("utf-8", "replace")
            raise ProgramError(
                f"qemu-img failed while {what} ({_exit_text(returncode)}): {telling_line(text)}"
            )


def _report_progress(piece: bytes, progress: ProgressCallback, total_bytes: int | None) -> None:
    match = _PROGRESS.search(piece)
    if match is None:
        return
    percent = min(100.0, float(match.group(1)))
    if total_bytes is None:
        progress(int(percent * 100), 10000)
    else:
        progress(int(total_bytes * percent / 100), total_bytes)


def convert_to_nbd(
    src: str | os.PathLike[str],
    src_fmt: str,
    socket_path: str,
    *,
    poll: Callable[[], None] | None = None,
    poll_interval: float = 0.25,
) -> None:
    """Convert ``src`` to raw into the NBD export listening on ``socket_path``, in order.

    ``-n --target-is-zero`` makes qemu-img skip zero regions instead of writing them, and one
    coroutine without ``-W`` keeps every write in ascending order, so the server on the other
    end receives the image front to back (see ``ops/convert/nbd_sink.py``). ``poll`` is called
    while qemu-img runs (progress reporting).
    """
    source = image_path(src)
    argv = [
        "qemu-img", "convert", "-n", "--target-is-zero", "-m", "1",
        "-f", _check_format(src_fmt), source,
        "-O", "raw", _nbd_url(socket_path),
    ]  # fmt: skip
    # The socket itself is bound (connect() works through a bind mount), not its directory.
    sandbox = Sandbox(reads=(source,), writes=(socket_path,))
    with tempfile.TemporaryFile() as errors:
        proc = start_program(argv, stdout=subprocess.DEVNULL, stderr=errors.fileno(), sandbox=sandbox)
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=poll_interval)
                    break
                except subprocess.TimeoutExpired:
                    if poll is not None:
                        poll()
        except BaseException:
            stop_program(proc)
            raise
        if returncode != 0:
            errors.seek(0)
            text = errors.read(64 * 1024).decode("utf-8", "replace")
            raise ProgramError(
                f"qemu-img failed while converting {os.fspath(src)} "
                f"({_exit_text(returncode)}): {telling_line(text)}"
            )


def _exit_text(returncode: int) -> str:
    return f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"


def flatten_overlay(
    overlay: str | os.PathLike[str],
    base: str | os.PathLike[str],
    base_fmt: str,
    dst: str | os.PathLike[str],
) -> None:
    """Write the disk an instance sees (its qcow2 ``overlay`` on ``base``) as one raw image.

    The chain is named explicitly (``--image-opts`` with ``backing.driver``/``backing.file.
    filename``), as QEMU ran it: no backing name in any header is followed. Sparse output.
    """
    source, under, target = image_path(overlay), image_path(base), image_path(dst)
    for path in (source, under):
        if "," in path:
            raise InvalidArgumentError(
                f"The path {path} contains a comma, which qemu-img options cannot hold."
            )
    options = (
        f"driver=qcow2,file.filename={source},backing.driver={_check_format(base_fmt)},"
        f"backing.file.filename={under}"
    )
    argv = ["qemu-img", "convert", "--image-opts", options, "-O", "raw", target]
    run_program(
        argv,
        what=f"reading the disk of {os.fspath(overlay)}",
        sandbox=Sandbox(reads=(source, under), writes=(target,)),
    )
