"""MBR and EBR-chain reading and writing, checked against sfdisk on sparse files."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from tests.disk.helpers import (
    MiB,
    blkid_probe,
    fdisk_commands,
    fdisk_list,
    new_disk,
    read_bytes,
    read_table,
    sfdisk_json,
    write_bytes,
)
from tests.fixtures import hostile_disk
from tests.fixtures.tools import run, sparse_file

from imagewright.disk.mbr import (
    pack_mbr_sector,
    parse_mbr_sector,
    protective_mbr,
)
from imagewright.disk.partitions import grow_partition, max_partition_end
from imagewright.disk.table import DiskWrite, PartitionTable
from imagewright.errors import InvalidArgumentError

pytestmark = pytest.mark.integration

PRIMARIES = """label: dos
label-id: 0x1234abcd
,16M,83,*
,8M,82
,8M,8e
,,c
"""

LOGICALS = """label: dos
label-id: 0xdeadbeef
,8M,ef
,,{ext}
,4M,83
,4M,82
,4M,7
,4M,fd
,,83
"""


def assert_matches_sfdisk(table: PartitionTable | None, reference: dict[str, object]) -> None:
    assert table is not None
    assert table.kind == "mbr" and reference["label"] == "dos"
    assert table.disk_id == reference["id"]
    assert table.sector_size == reference["sectorsize"]
    expected = reference["partitions"]
    assert isinstance(expected, list)
    assert [p.number for p in table.partitions] == [int(re.sub(r".*\D", "", e["node"])) for e in expected]
    for part, entry in zip(table.partitions, expected, strict=True):
        assert (part.start, part.sectors, part.type_id) == (entry["start"], entry["size"], entry["type"])
        assert part.bootable == entry.get("bootable", False)
        assert part.end == part.start + part.sectors - 1
        assert part.size == part.sectors * table.sector_size


def test_primary_partitions_match_sfdisk(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "primaries.img", 64 * MiB, PRIMARIES)
    table = read_table(disk)
    assert_matches_sfdisk(table, sfdisk_json(disk))
    assert table is not None
    assert [p.kind for p in table.partitions] == ["primary"] * 4
    assert table.problems == [] and table.warnings == []
    assert [p.type_name for p in table.partitions] == [
        "Linux",
        "Linux swap / Solaris",
        "Linux LVM",
        "W95 FAT32 (LBA)",
    ]


@pytest.mark.parametrize("ext", ["5", "f", "85"])
def test_extended_partition_and_logicals_match_sfdisk(tmp_path: Path, ext: str) -> None:
    disk = new_disk(tmp_path, f"logicals-{ext}.img", 64 * MiB, LOGICALS.format(ext=ext))
    table = read_table(disk)
    assert_matches_sfdisk(table, sfdisk_json(disk))
    assert table is not None
    assert [p.number for p in table.partitions if p.kind == "logical"] == [5, 6, 7, 8, 9]
    assert table.partition(2) is not None and table.partition(2).kind == "extended"  # type: ignore[union-attr]
    assert table.problems == [] and table.warnings == []
    # Each logical's entry lives in its own EBR, just before it.
    for part in table.partitions:
        if part.kind == "logical":
            assert part.table_lba < part.start and part.table_lba in table.ebrs


def test_type_names_are_fdisks(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "names.img", 64 * MiB, LOGICALS.format(ext="f"))
    table = read_table(disk)
    assert table is not None
    listing = run("sfdisk", "-l", disk).stdout.decode()
    names = {}
    for line in listing.splitlines():
        match = re.match(
            rf"^{re.escape(str(disk))}(\d+)\s+\*?\s*\d+\s+\d+\s+\d+\s+\S+\s+[0-9a-f]+\s+(.*)$", line
        )
        if match:
            names[int(match.group(1))] = match.group(2).strip()
    assert len(names) == len(table.partitions)
    assert {p.number: p.type_name for p in table.partitions} == names


def test_4096_byte_sectors_match_fdisk(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "4k.img", 64 * MiB)
    commands = "o\nn\np\n1\n\n+8M\nn\ne\n2\n\n\nn\nl\n\n+4M\nn\nl\n\n\nt\n6\n82\na\n1\nw\n"
    fdisk_commands(disk, commands, 4096)
    identifier, rows = fdisk_list(disk, 4096, "Device,Start,End,Sectors,Id")
    table = read_table(disk, sector_size=4096)
    assert table is not None and table.sector_size == 4096
    assert table.disk_id == identifier
    assert len(rows) == 4
    for part, row in zip(table.partitions, rows, strict=True):
        assert row["Device"].endswith(str(part.number))
        assert (part.start, part.end, part.sectors) == (
            int(row["Start"]),
            int(row["End"]),
            int(row["Sectors"]),
        )
        assert part.type_id == row["Id"]
        assert part.size == part.sectors * 4096
    assert table.partitions[0].bootable
    assert table.problems == []


def test_fat_superfloppy_is_not_a_partition_table(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "floppy.img", 32 * MiB)
    run("mkfs.vfat", "-F", "16", "-n", "FLOPPY", disk)
    assert read_bytes(disk, 510, 2) == b"\x55\xaa"
    assert read_table(disk) is None
    assert "PTTYPE" not in blkid_probe(disk)


def test_ntfs_volume_is_not_a_partition_table(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "ntfs.img", 16 * MiB)
    run("mkntfs", "-q", "-F", "-f", disk)
    assert read_bytes(disk, 510, 2) == b"\x55\xaa"
    assert read_table(disk) is None


def test_a_bad_status_byte_means_no_mbr_as_for_blkid(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "status.img", 16 * MiB, "label: dos\n,,83\n")
    assert read_table(disk) is not None
    write_bytes(disk, 446, b"\x12")
    assert read_table(disk) is None
    assert "PTTYPE" not in blkid_probe(disk)


def test_mbr_sector_round_trips_byte_for_byte(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "rt.img", 64 * MiB, LOGICALS.format(ext="5"))
    write_bytes(disk, 0, Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()[:440])
    sector = read_bytes(disk, 0, 512)
    assert pack_mbr_sector(parse_mbr_sector(sector)) == sector
    table = read_table(disk)
    assert table is not None
    for lba, ebr in table.ebrs.items():
        assert pack_mbr_sector(ebr) == read_bytes(disk, lba * 512, 512)


def test_protective_mbr_equals_sfdisks(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "pmbr.img", 64 * MiB, "label: gpt\n,,L\n")
    sector = read_bytes(disk, 0, 512)
    ours = protective_mbr(64 * MiB // 512, parse_mbr_sector(sector))
    assert ours[446:] == sector[446:]
    assert ours[:440] == sector[:440]


def apply(disk: Path, writes: list[DiskWrite]) -> None:
    for write in writes:
        write_bytes(disk, write.offset, write.data)


def test_grow_primary_partition_as_sfdisk_sees_it(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "grow.img", 64 * MiB, "label: dos\n,8M,83,*\n,8M,82\n")
    table = read_table(disk)
    assert table is not None
    limit = max_partition_end(table, 2)
    assert limit == 64 * MiB // 512 - 1
    new_table, writes = grow_partition(table, 2, limit)
    assert [w.lba for w in writes] == [0]
    apply(disk, writes)
    reference = sfdisk_json(disk)
    assert reference["partitions"][1]["size"] == limit - 18432 + 1
    assert_matches_sfdisk(read_table(disk), reference)
    assert_matches_sfdisk(new_table, reference)
    with pytest.raises(InvalidArgumentError):
        grow_partition(new_table, 1, 20000)  # would run into partition 2


def test_grow_last_logical_grows_the_extended_partition(tmp_path: Path) -> None:
    # start= inside the extended partition is how an sfdisk script asks for a logical.
    script = "label: dos\n,8M,83\n,32M,5\nstart=20480,size=8M,type=83\nstart=38912,size=8M,type=83\n"
    disk = new_disk(tmp_path, "growlog.img", 128 * MiB, script)
    table = read_table(disk)
    assert table is not None
    last = table.partition(6)
    assert last is not None
    new_end = 128 * MiB // 512 - 1
    assert max_partition_end(table, 6) == new_end
    new_table, writes = grow_partition(table, 6, new_end)
    apply(disk, writes)
    reference = sfdisk_json(disk)
    assert_matches_sfdisk(read_table(disk), reference)
    assert_matches_sfdisk(new_table, reference)
    by_node = {int(re.sub(r".*\D", "", p["node"])): p for p in reference["partitions"]}
    assert by_node[6]["start"] + by_node[6]["size"] - 1 == new_end
    assert by_node[2]["start"] + by_node[2]["size"] - 1 == new_end
    # The kernel-facing view agrees too: blkid lists the grown logical.
    run("sfdisk", "--verify", disk)


def test_extended_chain_loop_is_a_problem(tmp_path: Path) -> None:
    disk = hostile_disk.mbr_extended_chain_loop(tmp_path)
    started = time.process_time()
    table = read_table(disk)
    assert time.process_time() - started < 1.0
    assert table is not None
    assert any("loops back" in p for p in table.problems)
    assert [p.number for p in table.partitions if p.kind == "logical"] == [5, 6]


def test_ten_thousand_logicals_are_cut_at_128(tmp_path: Path) -> None:
    disk = hostile_disk.mbr_ebr_chain_of_10000_logicals(tmp_path)
    started = time.process_time()
    table = read_table(disk)
    assert time.process_time() - started < 1.0
    assert table is not None
    assert any("more than 128 logical partitions" in p for p in table.problems)
    assert len([p for p in table.partitions if p.kind == "logical"]) == 128


def test_partition_beyond_the_disk_and_overlaps_are_problems(tmp_path: Path) -> None:
    beyond = read_table(hostile_disk.mbr_partition_beyond_disk(tmp_path))
    assert beyond is not None
    assert any("beyond the end of the disk" in p for p in beyond.problems)
    overlap = read_table(hostile_disk.mbr_overlapping_partitions(tmp_path))
    assert overlap is not None
    assert any("overlap" in p for p in overlap.problems)


def test_ebr_outside_the_extended_partition_is_a_problem(tmp_path: Path) -> None:
    table = read_table(hostile_disk.mbr_ebr_outside_extended(tmp_path))
    assert table is not None
    assert any("outside the extended partition" in p for p in table.problems)


def test_grow_refuses_a_table_with_problems(tmp_path: Path) -> None:
    table = read_table(hostile_disk.mbr_overlapping_partitions(tmp_path))
    assert table is not None
    with pytest.raises(Exception, match="problems"):
        grow_partition(table, 1, table.partitions[0].end + 1)
