"""Issue 13, category 1: where QEMU 7.2 reads an image differently from the specification.

For every generated case in ``tests/fixtures/hostile_qemu_reading.py``:

- QEMU itself proves the case is real: run next to a file named ``canary``, ``qemu-img info``
  opens the canary (strace sees the ``openat``), or QEMU's reading demonstrably differs from
  the specification's (the case's own check);
- ``convert``, ``resize``, ``prepare`` and ``build`` refuse it on the command line (exit 1, one
  sentence) before writing anything;
- ``imagewright inspect``, traced with strace, opens no file but the image.

(``tests/ops/test_inspect_hostile.py`` runs the same cases through ``inspect`` for the
refusal reason, CPU time and memory.) Controls made by qemu-img in every subformat stay safe,
and the QEMU mirrors (``vmdk_qemu``, ``qemu_probe``) agree with QEMU on them and on lines
QEMU does *not* open.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from tests.fixtures.hostile_qemu_reading import CANARY, CANARY_BYTES, QEMU_CASES, QemuReadingCase
from tests.fixtures.tools import qemu_img, which

from imagewright.binary import FileSource
from imagewright.formats.qemu_probe import qemu_probe_choice, qemu_probe_scores
from imagewright.formats.vmdk_qemu import c_string, qemu_extent_lines
from imagewright.inspection import inspect_image

pytestmark = pytest.mark.integration

CASE_IDS = [case.name for case in QEMU_CASES]


def build_case(case: QemuReadingCase, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return case.build(directory)


def traced_openat(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``argv`` under ``strace -f -e trace=openat``; every path it opened (successfully or not)."""
    trace = cwd.parent / f"{cwd.name}.strace"
    proc = subprocess.run(
        [which("strace"), "-f", "-qq", "-e", "trace=openat", "-o", str(trace), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    opened = re.findall(r'openat\([^,]+, "((?:[^"\\]|\\.)*)"', trace.read_text(errors="replace"))
    trace.unlink()
    return proc, opened


def qemu_reading(case: QemuReadingCase, image: Path) -> tuple[dict[str, Any] | None, str, bool]:
    """qemu-img info on ``image`` next to a canary: (JSON or None, stderr, canary opened)."""
    directory = image.parent
    (directory / CANARY).write_bytes(CANARY_BYTES)
    fmt = ["-f", case.fmt] if case.fmt is not None else []
    if case.qemu_command == "convert":
        argv = [which("qemu-img"), "convert", *fmt, "-O", "raw", str(image), str(directory / "out.raw")]
    else:
        argv = [which("qemu-img"), "info", "--output=json", "--backing-chain", *fmt, str(image)]
    proc, opened = traced_openat(argv, directory)
    (directory / "out.raw").unlink(missing_ok=True)
    canary = str(directory / CANARY)
    canary_opened = any(path in (CANARY, canary) or os.path.basename(path) == CANARY for path in opened)
    info: dict[str, Any] | None = None
    if proc.returncode == 0 and case.qemu_command == "info":
        chain = json.loads(proc.stdout)
        info = chain[0] if isinstance(chain, list) else chain
    (directory / CANARY).unlink()
    return info, proc.stderr, canary_opened


def test_the_generated_corpus_covers_every_rule() -> None:
    assert len(QEMU_CASES) >= 60
    assert len(set(CASE_IDS)) == len(CASE_IDS)
    prefixes = {name.split("-")[1] for name in CASE_IDS}
    assert {"vmdk", "qcow2", "qcow", "qed", "probe"} <= prefixes
    assert sum(case.oracle == "opens" for case in QEMU_CASES) >= 40
    assert sum(case.oracle == "differs" for case in QEMU_CASES) >= 10


@pytest.mark.parametrize("case", QEMU_CASES, ids=CASE_IDS)
def test_qemu_itself_shows_the_case_is_real(case: QemuReadingCase, tmp_path: Path) -> None:
    image = build_case(case, tmp_path / "case")
    info, stderr, canary_opened = qemu_reading(case, image)
    if case.oracle == "opens":
        assert canary_opened, f"QEMU did not open the canary: {stderr or info}"
    else:
        assert not canary_opened
        assert case.check is not None
        case.check(info, stderr, image)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_sentence_refusal(result: Result) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert "refused" in message and "Traceback" not in message, message
    assert len(message.splitlines()) == 1, message


COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "convert": lambda image, out: ["convert", str(image), str(out / "out.qcow2")],
    "resize": lambda image, out: ["resize", str(image), "+64M"],
    "prepare": lambda image, out: ["prepare", str(image)],
    "build": lambda image, out: ["build", "--from", str(image), "-o", str(out / "disk.qcow2")],
}


@pytest.mark.parametrize("case", QEMU_CASES, ids=CASE_IDS)
def test_every_command_refuses_before_writing(
    case: QemuReadingCase, tmp_path: Path, run_cli: Callable[..., Result]
) -> None:
    directory = tmp_path / "case"
    image = build_case(case, directory)
    out = tmp_path / "out"
    out.mkdir()
    before = {path.name: sha256(path) for path in directory.iterdir()}
    for name, argv in COMMANDS.items():
        result = run_cli(argv(image, out))
        assert_one_sentence_refusal(result)
        assert list(out.iterdir()) == [], name
        assert {path.name: sha256(path) for path in directory.iterdir()} == before, name


#: A few cases of each kind, traced with strace (a Python start-up under strace takes ~1 s).
STRACE_CASES = [
    case
    for case in QEMU_CASES
    if case.name
    in {
        "qemu-vmdk-hint-comment-sparse",
        "qemu-vmdk-hint-json-name-descriptor-file",
        "qemu-vmdk-extent-fields-on-separate-lines-capacity-0",
        "qemu-vmdk-capacity-0-header-stream-footer-valid",
        "qemu-vmdk-hint-cowd-header",
        "qemu-qcow2-backing-name-hides-text-after-nul",
        "qemu-qed-backing-name-hides-text-after-nul",
    }
]


@pytest.mark.parametrize("case", STRACE_CASES, ids=[case.name for case in STRACE_CASES])
def test_inspect_opens_no_file_but_the_image(case: QemuReadingCase, tmp_path: Path) -> None:
    assert len(STRACE_CASES) == 7
    directory = tmp_path / "case"
    image = build_case(case, directory)
    (directory / CANARY).write_bytes(CANARY_BYTES)
    proc, opened = traced_openat(
        [str(Path(sys.executable).with_name("imagewright")), "inspect", "--json", str(image)], directory
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["verdict"]["verdict"] == "refused"
    in_case_dir = {
        os.path.realpath(path if os.path.isabs(path) else directory / path)
        for path in opened
        if os.path.realpath(path if os.path.isabs(path) else directory / path).startswith(
            os.path.realpath(directory)
        )
    }
    assert in_case_dir == {os.path.realpath(image)}
    assert not any(os.path.basename(path) == CANARY for path in opened)


# -- controls ---------------------------------------------------------------------------------
CONTROLS: dict[str, list[str]] = {
    "vmdk-monolithicSparse": ["-f", "vmdk"],
    "vmdk-streamOptimized": ["-f", "vmdk", "-o", "subformat=streamOptimized"],
    "qcow2-v2": ["-f", "qcow2", "-o", "compat=0.10"],
    "qcow2-v3": ["-f", "qcow2", "-o", "compat=1.1"],
    "qcow2-v3-zstd": ["-f", "qcow2", "-o", "compression_type=zstd"],
    "qcow": ["-f", "qcow"],
    "vhd-dynamic": ["-f", "vpc"],
    "vhd-fixed": ["-f", "vpc", "-o", "subformat=fixed"],
    "vhdx": ["-f", "vhdx"],
    "vdi": ["-f", "vdi"],
    "qed": ["-f", "qed"],
    "parallels": ["-f", "parallels"],
    "raw": ["-f", "raw"],
}


def guest_disk(path: Path) -> Path:
    """A raw disk with data in it, so that converted controls carry allocated clusters."""
    with path.open("wb") as f:
        f.truncate(32 << 20)
        for offset in range(0, 32 << 20, 3 << 20):
            f.seek(offset)
            f.write(bytes(range(256)) * 256)
    return path


#: Every control in every way qemu-img makes it: created empty, converted from a disk with
#: data, and (for the formats that compress) converted with ``-c``.
CONTROL_MATRIX = (
    [(control, "create") for control in CONTROLS]
    + [(control, "convert") for control in CONTROLS]
    + [(control, "convert-compressed") for control in ("qcow2-v2", "qcow2-v3", "qcow2-v3-zstd")]
)


@pytest.mark.parametrize(("control", "made_by"), CONTROL_MATRIX, ids=[f"{c}-{m}" for c, m in CONTROL_MATRIX])
def test_controls_made_by_qemu_img_stay_safe(control: str, made_by: str, tmp_path: Path) -> None:
    args = CONTROLS[control]
    fmt = args[1]
    image = tmp_path / f"control.{fmt}"
    if made_by == "create":
        qemu_img("create", "-q", *args, str(image), "32M")
    else:
        compress = ["-c"] if made_by == "convert-compressed" else []
        source = guest_disk(tmp_path / "guest.raw")
        qemu_img("convert", "-q", "-f", "raw", *compress, "-O", *args[1:], str(source), str(image))
    report = inspect_image(image)
    assert report.verdict.safe, report.verdict.reasons
    assert report.format == fmt
    with FileSource(image) as src:
        head = src.pread(0, 64 << 10)
        choice = qemu_probe_choice(qemu_probe_scores(head, src.size))
    # QEMU's probe misses a fixed VHD (its only footer is at the end): raw to QEMU.
    assert choice == (["raw"] if control == "vhd-fixed" else [fmt])
    probed = json.loads(qemu_img("info", "--output=json", str(image)))["format"]
    assert probed == choice[0]


#: Lines QEMU's extent sscanf does NOT open although they look like extents to a person.
NOT_OPENED = {
    "lower-case-access": b'rw 2048 FLAT "canary" 0',
    "token-before-rw": b'X RW 2048 FLAT "canary" 0',
    "lower-case-type": b'RW 2048 flat "canary" 0',
    "no-quotes": b"RW 2048 FLAT canary 0",
    "zero-sectors": b'RW 0 FLAT "canary" 0',
    "hex-size": b'RW 0x800 FLAT "canary" 0',
    "read-only": b'RDONLY 2048 FLAT "canary" 0',
    "type-longer-than-ten": b'RW 2048 VMFSSPARSEX"canary"',
}


@pytest.mark.parametrize("line", list(NOT_OPENED.values()), ids=list(NOT_OPENED))
def test_the_extent_mirror_agrees_with_qemu_on_lines_it_does_not_open(line: bytes, tmp_path: Path) -> None:
    text = b'version=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\n' + line + b"\n"
    image = tmp_path / "disk.vmdk"
    image.write_bytes(text)
    (tmp_path / CANARY).write_bytes(CANARY_BYTES)
    _, opened = traced_openat([which("qemu-img"), "info", "-f", "vmdk", str(image)], tmp_path)
    assert not any(os.path.basename(path) == CANARY for path in opened)
    assert [e for e in qemu_extent_lines(c_string(text)) if e.outcome == "opens"] == []


# -- formats whose parents QEMU 7.2 never opens -------------------------------------------------
def vhd_naming_the_canary(directory: Path) -> Path:
    from tests.fixtures.hostile_vhd import create_vhd, make_differencing

    path = create_vhd(directory)
    make_differencing(path, CANARY, [(b"W2ru", f".\\{CANARY}"), (b"W2ku", f"C:\\vms\\{CANARY}")])
    return path


def vhdx_naming_the_canary(directory: Path) -> Path:
    from tests.fixtures.hostile_vhdx import create_vhdx, make_differencing

    path = create_vhdx(directory)
    make_differencing(
        path,
        [("parent_linkage", "{83ab1d1c-8f2c-4e4c-9b47-3c4f6a5a1e01}"), ("relative_path", f".\\{CANARY}")],
    )
    return path


def vdi_diff_image(directory: Path) -> Path:
    from tests.fixtures.hostile_vdi import diff_image

    return diff_image(directory)


PARENT_FORMATS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "vpc": ("names a parent image", vhd_naming_the_canary),
    "vhdx": ("names a parent image", vhdx_naming_the_canary),
    "vdi": ("names a parent image", vdi_diff_image),
}


@pytest.mark.parametrize("fmt", list(PARENT_FORMATS))
def test_qemu_opens_no_parent_of_these_formats_and_we_still_refuse_them(fmt: str, tmp_path: Path) -> None:
    """QEMU 7.2's vpc driver ignores a differencing disk's parent locators, and its vhdx and
    vdi drivers refuse differencing images outright; Hyper-V and VirtualBox do open the
    parent, so the reference is refused all the same."""
    reason, build = PARENT_FORMATS[fmt]
    image = build(tmp_path)
    (tmp_path / CANARY).write_bytes(CANARY_BYTES)
    proc, opened = traced_openat(
        [which("qemu-img"), "convert", "-f", fmt, "-O", "raw", str(image), str(tmp_path / "out.raw")],
        tmp_path,
    )
    assert not any(os.path.basename(path) == CANARY for path in opened)
    assert (proc.returncode == 0) == (fmt == "vpc"), proc.stderr
    report = inspect_image(image)
    assert not report.verdict.safe
    assert any(reason in r for r in report.verdict.reasons), report.verdict.reasons


# -- the mirror's edges, where QEMU's C has no test to run against ------------------------------
def test_a_hint_ending_the_10_kib_area_is_read_past_qemus_buffer() -> None:
    from imagewright.formats.vmdk_qemu import QEMU_DESC_SIZE, qemu_parent_hint

    key = b"parentFileNameHint"
    hint = qemu_parent_hint(b"#" * (QEMU_DESC_SIZE - len(key)) + key)
    assert hint is not None and hint.name is None and "past the end" in hint.failure
    hint = qemu_parent_hint(b"#" * (QEMU_DESC_SIZE - len(key) - 2) + key + b'="')
    assert hint is not None and hint.name is None  # no closing quote inside the buffer
    assert qemu_parent_hint(b'# nothing\0parentFileNameHint="x"') is None


def test_descriptor_offsets_wrap_like_a_u64_shift() -> None:
    from imagewright.formats.vmdk_qemu import wrapped_sector_offset

    assert wrapped_sector_offset(3) == 1536
    assert wrapped_sector_offset((1 << 55) | 3) == 1536
    assert wrapped_sector_offset(1 << 54) is None  # 2^63: bdrv_pread refuses the offset


def test_cids_are_read_like_sscanf_hex() -> None:
    from imagewright.formats.vmdk_qemu import qemu_read_cid

    assert qemu_read_cid(b"CID=0badcafe\nparentCID=ffffffff\n", parent=False) == 0x0BADCAFE
    assert qemu_read_cid(b"parentCID=  0x12\n", parent=True) == 0x12
    assert qemu_read_cid(b"parentCID=" + b"f" * 40, parent=True) == 0xFFFFFFFF
    assert qemu_read_cid(b"parentCID=-1", parent=True) == 0xFFFFFFFF
    assert qemu_read_cid(b"parentCID=zz", parent=True) is None
    # "CID" is found inside "parentCID" when that comes first, as strstr finds it.
    assert qemu_read_cid(b"parentCID=ffffffff\nCID=1\n", parent=False) == 0xFFFFFFFF
