"""Property: any partition layout sfdisk makes (GPT, or MBR with primaries and logicals), grown by
any delta, gives a table sfdisk and sgdisk accept, whose last partition ends where growpart
would put it and whose other partitions are unchanged."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import run, sparse_file
from tests.ops.resize_fixtures import MiB, end_of, partitions_by_number

from imagewright.binary import BytesSource, FileSource
from imagewright.disk.partitions import read_partition_table
from imagewright.errors import ImagewrightError, UnsafeImageError
from imagewright.ops.resize import resize
from imagewright.ops.resize.layout import plan_table

pytestmark = pytest.mark.integration

SECTOR = 512
ALIGN = 2048


@dataclass(frozen=True)
class Layout:
    label: str
    script: str
    disk_sectors: int


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    label = draw(st.sampled_from(["gpt", "dos"]))
    lines = [f"label: {label}"]
    position = ALIGN
    primaries = draw(st.integers(1, 6 if label == "gpt" else 3))
    for _ in range(primaries):
        position += ALIGN * draw(st.integers(0, 2))  # a gap of 0-2 MiB before it
        size = draw(st.integers(1, 40_000))
        lines.append(f"start={position},size={size},type={draw(st.sampled_from(['L', 'S', 'U']))}")
        position = -(-(position + size) // ALIGN) * ALIGN
    if label == "dos" and draw(st.booleans()):
        logicals = [draw(st.integers(1, 30_000)) for _ in range(draw(st.integers(1, 3)))]
        extended_start = position
        cursor = extended_start
        script_logicals = []
        for size in logicals:
            cursor += ALIGN  # room for the logical's EBR, aligned as sfdisk does
            script_logicals.append(f"start={cursor},size={size},type=83")
            cursor = -(-(cursor + size) // ALIGN) * ALIGN
        slack = ALIGN * draw(st.integers(0, 2))
        lines.append(f"start={extended_start},size={cursor - extended_start + slack},type=5")
        lines.extend(script_logicals)
        position = cursor + slack
    tail = draw(st.integers(34, 8_000))  # free space after the last partition (>= the GPT backup)
    return Layout(label, "\n".join(lines) + "\n", position + tail)


def sfdisk_json(path: Path) -> tuple[dict[str, Any], bytes]:
    proc = run("sfdisk", "--json", path)
    table: dict[str, Any] = json.loads(proc.stdout)["partitiontable"]
    return table, proc.stderr


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts(), delta=st.integers(1, 6_000_000), fmt=st.sampled_from(["raw", "raw", "qcow2"]))
def test_any_layout_grows_into_a_valid_table(layout: Layout, delta: int, fmt: str) -> None:
    with tempfile.TemporaryDirectory(prefix="resize-layout-") as scratch:
        raw = sparse_file(Path(scratch) / "disk.img", layout.disk_sectors * SECTOR)
        built = run(
            "sfdisk", "-q", "--no-reread", "--no-tell-kernel", raw, input=layout.script.encode(), check=False
        )
        assume(built.returncode == 0)
        before, _ = sfdisk_json(raw)
        image = raw
        if fmt == "qcow2":
            image = Path(scratch) / "disk.qcow2"
            run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image)

        report = resize(image, f"+{delta}s")

        if fmt == "qcow2":
            run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw)
        new_sectors = layout.disk_sectors + delta
        assert raw.stat().st_size == new_sectors * SECTOR
        after, warnings = sfdisk_json(raw)
        assert warnings == b""
        run("sfdisk", "--verify", raw)
        old_parts, new_parts = partitions_by_number(before), partitions_by_number(after)
        assert old_parts.keys() == new_parts.keys()
        grown = max((n for n, p in old_parts.items() if p["type"] != "5"), key=lambda n: end_of(old_parts[n]))
        assert report.partition is not None and report.partition.number == grown
        # growpart's end: 33 sectors before the end of the disk (the GPT's last usable sector).
        assert end_of(new_parts[grown]) == new_sectors - 34
        for number, entry in old_parts.items():
            if number == grown:
                assert new_parts[number]["start"] == entry["start"]
            elif entry["type"] == "5" and grown >= 5:
                assert (
                    new_parts[number]["start"] == entry["start"]
                    and end_of(new_parts[number]) == new_sectors - 34
                )
            else:
                assert new_parts[number] == entry
        if layout.label == "gpt":
            assert after["lastlba"] == new_sectors - 34
            assert b"No problems found" in run("sgdisk", "-v", raw).stdout
        with FileSource(raw) as src:
            ours = read_partition_table(src)
        assert ours is not None and ours.problems == [] and ours.warnings == []


# --- tables bent byte by byte ------------------------------------------------------------------

TABLE_BYTES = 40 * 512  # MBR/protective MBR, GPT header and entry array


@pytest.fixture(scope="module")
def real_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The first sectors (and EBRs) of small disks made by sfdisk, as bytes of a 16 MiB disk."""
    directory = tmp_path_factory.mktemp("bent-tables")
    scripts = {
        "gpt": "label: gpt\n,2M,U\n,4M,L\n,,S\n",
        "dos": "label: dos\n,2M,83\n,,5\n,2M,82\n,,83\n",
    }
    disks = {}
    for name, script in scripts.items():
        path = sparse_file(directory / f"{name}.img", 16 * MiB)
        run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", path, input=script.encode())
        disks[name] = path.read_bytes()
    return disks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["gpt", "dos"]),
    edits=st.lists(st.tuples(st.integers(0, TABLE_BYTES - 1), st.integers(0, 255)), min_size=1, max_size=8),
    ebr_edits=st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), max_size=4),
    new_size=st.integers(1, 64 * MiB // 512).map(lambda sectors: sectors * 512),
    number=st.one_of(st.none(), st.integers(1, 8)),
)
def test_bent_tables_give_a_sentence_or_a_valid_plan(
    real_tables: dict[str, bytes],
    name: str,
    edits: list[tuple[int, int]],
    ebr_edits: list[tuple[int, int]],
    new_size: int,
    number: int | None,
) -> None:
    disk = bytearray(real_tables[name])
    for offset, value in edits:
        disk[offset] = value
    for offset, value in ebr_edits:  # the first EBR of the dos disk sits at 3 MiB (sector 6144)
        disk[6144 * 512 + offset] = value
    try:
        table = read_partition_table(BytesSource(bytes(disk)))
    except ImagewrightError:
        return
    if table is None or table.problems:
        return
    try:
        plan = plan_table(table, new_size, partition=number)
    except ImagewrightError:
        return
    # Whatever was planned, written into a disk of the new size, reads back as planned.
    grown = bytearray(disk[:new_size].ljust(new_size, b"\0"))
    for write in plan.writes:
        grown[write.offset : write.offset + len(write.data)] = write.data
    again = read_partition_table(BytesSource(bytes(grown)))
    assert again is not None and again.problems == []
    shape = [(p.number, p.start, p.end, p.type_id) for p in again.partitions]
    assert shape == [(p.number, p.start, p.end, p.type_id) for p in plan.expected.partitions]


def test_stray_ebr_entry_that_growth_would_reveal_is_refused(real_tables: dict[str, bytes]) -> None:
    """Found by the test above: garbage in an EBR's fourth entry is ignored (it does not fit the
    extended partition) until the extended partition grows, then it reads as a new partition."""
    disk = bytearray(real_tables["dos"])
    disk[6144 * 512 + 507] = 0x69  # slot 4's size becomes 26880 sectors: the grown extended's size
    table = read_partition_table(BytesSource(bytes(disk)))
    assert table is not None and table.problems == []
    with pytest.raises(UnsafeImageError, match="stray entry in slot 4"):
        plan_table(table, 16925184)
