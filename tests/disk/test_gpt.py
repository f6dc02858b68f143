"""GPT reading, recovery from the backup, and the pure writers, checked against sfdisk/sgdisk/fdisk."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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

from imagewright.disk.gpt import GptEntry, new_gpt_header, pack_header, parse_header
from imagewright.disk.gpt_table import gpt_writes
from imagewright.disk.guids import BIOS_BOOT_GUID, EFI_SYSTEM_GUID, LINUX_FILESYSTEM_GUID, LINUX_SWAP_GUID
from imagewright.disk.partitions import grow_partition, max_partition_end, relocate_gpt_backup
from imagewright.disk.table import DiskWrite, PartitionTable
from imagewright.errors import InvalidArgumentError

pytestmark = pytest.mark.integration

ROOT_UUID = "11111111-2222-3333-4444-555555555555"
SCRIPT = f"""label: gpt
label-id: 01234567-89AB-CDEF-0123-456789ABCDEF
size=1M, type={BIOS_BOOT_GUID}, name="bios"
size=8M, type=U, name="EFI system", attrs="RequiredPartition"
size=8M, type=L, name="root fs", attrs="LegacyBIOSBootable GUID:60,63", uuid={ROOT_UUID}
size=4M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name="Système ünïcode"
type=S
"""


def assert_matches_sfdisk(table: PartitionTable | None, reference: dict[str, Any]) -> None:
    assert table is not None
    assert table.kind == "gpt" and reference["label"] == "gpt"
    assert table.disk_id == reference["id"]
    assert table.first_usable_lba == reference["firstlba"]
    assert table.last_usable_lba == reference["lastlba"]
    expected = reference["partitions"]
    assert [p.number for p in table.partitions] == [int(re.sub(r".*\D", "", e["node"])) for e in expected]
    for part, entry in zip(table.partitions, expected, strict=True):
        assert (part.start, part.sectors, part.type_id, part.uuid) == (
            entry["start"],
            entry["size"],
            entry["type"],
            entry["uuid"],
        )
        assert part.name == entry.get("name", "")
        assert part.attributes_text == entry.get("attrs", "")
        assert part.kind == "gpt"


def sgdisk_verify(path: Path) -> str:
    proc = run("sgdisk", "-v", path, check=False)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def apply(disk: Path, writes: list[DiskWrite]) -> None:
    for write in writes:
        write_bytes(disk, write.offset, write.data)


def test_gpt_matches_sfdisk(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "gpt.img", 64 * MiB, SCRIPT)
    table = read_table(disk)
    assert_matches_sfdisk(table, sfdisk_json(disk))
    assert table is not None
    assert table.problems == [] and table.warnings == []
    assert table.disk_id == "01234567-89AB-CDEF-0123-456789ABCDEF"
    assert [p.type_name for p in table.partitions] == [
        "BIOS boot",
        "EFI System",
        "Linux filesystem",
        "Linux LVM",
        "Linux swap",
    ]
    root = table.partition(3)
    assert root is not None and root.bootable and root.attributes == (1 << 2) | (1 << 60) | (1 << 63)
    assert table.partition(2).attributes == 1  # type: ignore[union-attr]
    assert table.gpt_header_source == "primary"


def test_gpt_type_names_are_fdisks(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "names.img", 64 * MiB, SCRIPT)
    _, rows = fdisk_list(disk, 512, "Device,Type")
    table = read_table(disk)
    assert table is not None
    assert [p.type_name for p in table.partitions] == [row["Type"] for row in rows]


def test_gpt_without_protective_mbr_is_read_with_a_warning(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "nopmbr.img", 64 * MiB, SCRIPT)
    write_bytes(disk, 0, bytes(512))
    table = read_table(disk)
    assert table is not None and table.kind == "gpt" and len(table.partitions) == 5
    assert any("no protective MBR" in w for w in table.warnings)


def test_gpt_made_by_sgdisk(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "sgdisk.img", 32 * MiB)
    run("sgdisk", "-n", "1:2048:+1M", "-t", "1:EF02", "-c", "1:grub", "-n", "2:0:0", "-t", "2:8300", disk)
    table = read_table(disk)
    assert_matches_sfdisk(table, sfdisk_json(disk))
    assert table is not None and table.partitions[0].type_id == BIOS_BOOT_GUID


def test_4096_byte_sector_gpt_matches_fdisk_and_is_found_from_512(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "4k.img", 64 * MiB)
    fdisk_commands(disk, "g\nn\n1\n\n+8M\nn\n2\n\n\nt\n2\n19\nx\nn\n1\nboot\nr\nw\n", 4096)
    identifier, rows = fdisk_list(disk, 4096, "Device,Start,End,Sectors,Type-UUID,UUID,Name")
    for requested in (4096, 512):
        table = read_table(disk, sector_size=requested)
        assert table is not None and table.kind == "gpt" and table.sector_size == 4096
        assert table.disk_id == identifier
        assert len(rows) == len(table.partitions) == 2
        for part, row in zip(table.partitions, rows, strict=True):
            expected = (
                int(row["Start"]),
                int(row["End"]),
                int(row["Sectors"]),
                row["Type-UUID"],
                row["UUID"],
            )
            assert (part.start, part.end, part.sectors, part.type_id, part.uuid) == expected
            assert part.size == part.sectors * 4096
        assert table.partitions[0].name == "boot"
        assert table.partitions[1].type_id == LINUX_SWAP_GUID
        assert table.problems == []
    assert any("4096-byte sectors" in w for w in read_table(disk).warnings)  # type: ignore[union-attr]


def test_damaged_primary_header_falls_back_to_backup_as_sfdisk_does(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "primary.img", 64 * MiB, SCRIPT)
    write_bytes(disk, 512 + 40, b"X")  # first usable LBA: header CRC now wrong
    table = read_table(disk)
    assert table is not None and table.gpt_header_source == "backup"
    assert any("primary GPT header is unusable" in w and "CRC" in w for w in table.warnings)
    assert table.problems == []
    proc = run("sfdisk", "--json", disk)
    assert b"primary GPT table is corrupt" in proc.stderr
    assert_matches_sfdisk(table, sfdisk_json(disk))
    assert "Main header: ERROR" in sgdisk_verify(disk)


def test_relocate_at_the_same_size_repairs_a_damaged_primary(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "repair.img", 64 * MiB, SCRIPT)
    before = sfdisk_json(disk)
    write_bytes(disk, 512 + 40, b"X")
    table = read_table(disk)
    assert table is not None and table.gpt_header_source == "backup"
    _, writes = relocate_gpt_backup(table, 64 * MiB)
    apply(disk, writes)
    assert "No problems found" in sgdisk_verify(disk)
    repaired = read_table(disk)
    assert repaired is not None and repaired.warnings == [] and repaired.gpt_header_source == "primary"
    assert_matches_sfdisk(repaired, before)


def test_damaged_primary_entry_array_falls_back_to_backup(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "array.img", 64 * MiB, SCRIPT)
    write_bytes(disk, 2 * 512 + 56, b"ZZZZ")  # inside entry 1's name
    table = read_table(disk)
    assert table is not None and table.gpt_header_source == "backup"
    assert any("entry array" in w for w in table.warnings)
    assert table.partitions[0].name == "bios"
    assert "Main partition table: ERROR" in sgdisk_verify(disk)


def test_missing_backup_header_is_a_warning(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "backup.img", 64 * MiB, SCRIPT)
    write_bytes(disk, 64 * MiB - 512, bytes(512))
    table = read_table(disk)
    assert table is not None and table.gpt_header_source == "primary"
    assert any("backup GPT header is missing or damaged" in w for w in table.warnings)
    assert table.problems == []
    assert "Backup header: ERROR" in sgdisk_verify(disk) or "backup" in sgdisk_verify(disk).lower()


def test_both_headers_damaged_is_a_problem(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "both.img", 64 * MiB, SCRIPT)
    write_bytes(disk, 512 + 40, b"X")
    write_bytes(disk, 64 * MiB - 512 + 40, b"X")
    table = read_table(disk)
    assert table is not None and table.kind == "gpt" and table.partitions == []
    assert any("no usable GPT" in p for p in table.problems)
    assert blkid_probe(disk).get("PTTYPE") == "PMBR"


def test_grown_disk_is_noticed_and_relocate_fixes_it(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "grown.img", 64 * MiB, SCRIPT)
    with disk.open("r+b") as f:
        f.truncate(96 * MiB)
    proc = run("sfdisk", "--json", disk)
    assert b"not on the end of the device" in proc.stderr
    table = read_table(disk)
    assert table is not None
    assert any("larger than the GPT says (image was grown)" in w for w in table.warnings)
    assert table.problems == []
    new_table, writes = relocate_gpt_backup(table, 96 * MiB)
    assert {w.what for w in writes} >= {"protective MBR", "primary GPT header", "backup GPT header"}
    apply(disk, writes)
    assert "No problems found" in sgdisk_verify(disk)
    proc = run("sfdisk", "--json", disk)
    assert proc.stderr == b""
    reread = read_table(disk)
    assert reread is not None and reread.warnings == [] and reread.problems == []
    assert reread.last_usable_lba == 96 * MiB // 512 - 34
    assert_matches_sfdisk(reread, sfdisk_json(disk))
    assert_matches_sfdisk(new_table, sfdisk_json(disk))
    # The old backup header (at the old last sector) was wiped.
    assert read_bytes(disk, 64 * MiB - 512, 8) == bytes(8)

    # Then the last partition grows into the new space.
    last = new_table.partitions[-1]
    limit = max_partition_end(new_table, last.number)
    assert limit == new_table.last_usable_lba
    grown, writes = grow_partition(new_table, last.number, limit)
    apply(disk, writes)
    assert "No problems found" in sgdisk_verify(disk)
    reference = sfdisk_json(disk)
    assert reference["partitions"][-1]["start"] + reference["partitions"][-1]["size"] - 1 == limit
    assert_matches_sfdisk(read_table(disk), reference)
    assert_matches_sfdisk(grown, reference)


def test_relocate_keeps_grub_boot_code_in_the_protective_mbr(tmp_path: Path) -> None:
    disk = new_disk(
        tmp_path, "bootcode.img", 32 * MiB, SCRIPT.replace("size=4M, type=E6", "size=2M, type=E6")
    )
    boot_img = Path("/usr/lib/grub/i386-pc/boot.img").read_bytes()
    write_bytes(disk, 0, boot_img[:440])
    with disk.open("r+b") as f:
        f.truncate(48 * MiB)
    table = read_table(disk)
    assert table is not None
    _, writes = relocate_gpt_backup(table, 48 * MiB)
    apply(disk, writes)
    assert read_bytes(disk, 0, 440) == boot_img[:440]
    assert "No problems found" in sgdisk_verify(disk)


def test_new_gpt_written_by_us_is_read_by_sfdisk_and_sgdisk(tmp_path: Path) -> None:
    disk = sparse_file(tmp_path / "ours.img", 64 * MiB)
    sectors = 64 * MiB // 512
    header = new_gpt_header(sectors, 512, disk_guid="AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE")
    entries = [
        GptEntry.new(BIOS_BOOT_GUID, 2048, 4095, name="bios"),
        GptEntry.new(EFI_SYSTEM_GUID, 4096, 20479, name="esp"),
        GptEntry.new(LINUX_FILESYSTEM_GUID, 20480, header.last_usable_lba, name="root", attributes=1 << 2),
    ]
    apply(disk, gpt_writes(header, entries, sectors, 512))
    assert "No problems found" in sgdisk_verify(disk)
    reference = sfdisk_json(disk)
    assert reference["id"] == "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"
    assert [p["name"] for p in reference["partitions"]] == ["bios", "esp", "root"]
    assert reference["partitions"][2]["attrs"] == "LegacyBIOSBootable"
    table = read_table(disk)
    assert_matches_sfdisk(table, reference)
    assert table is not None and table.warnings == [] and table.problems == []


def test_header_round_trips_byte_for_byte(tmp_path: Path) -> None:
    disk = new_disk(tmp_path, "rt.img", 64 * MiB, SCRIPT)
    for lba in (1, 64 * MiB // 512 - 1):
        sector = read_bytes(disk, lba * 512, 512)
        assert pack_header(parse_header(sector), 512) == sector


@pytest.mark.parametrize(
    ("builder", "reason"),
    [
        (hostile_disk.gpt_claiming_2_to_the_32_entries, "4294967295 partition entries"),
        (hostile_disk.gpt_entry_size_zero, "entry size must be"),
        (hostile_disk.gpt_entry_size_huge, "more than the 4 MiB"),
    ],
)
def test_absurd_entry_arrays_are_problems_and_sfdisk_rejects_them_too(
    tmp_path: Path, builder: Any, reason: str
) -> None:
    disk = builder(tmp_path)
    table = read_table(disk)
    assert table is not None and table.partitions == []
    assert any(reason in p for p in table.problems), table.problems
    assert blkid_probe(disk).get("PTTYPE") == "PMBR"


def test_gpt_partitions_beyond_the_disk_or_overlapping_are_problems(tmp_path: Path) -> None:
    beyond = read_table(hostile_disk.gpt_partition_beyond_disk(tmp_path))
    assert beyond is not None
    assert any("beyond the end of the disk" in p for p in beyond.problems)
    assert any("smaller than the GPT says" in w for w in beyond.warnings)
    overlap = read_table(hostile_disk.gpt_overlapping_partitions(tmp_path))
    assert overlap is not None
    assert any("overlap" in p for p in overlap.problems)


def test_relocate_inwards_when_the_tail_is_free_and_refuse_when_a_partition_is_cut(tmp_path: Path) -> None:
    script = SCRIPT.replace("type=S\n", "size=4M, type=S\n")
    disk = new_disk(tmp_path, "shrink.img", 64 * MiB, script)
    table = read_table(disk)
    assert table is not None
    last_end = max(p.end for p in table.partitions)
    # The smallest disk that still holds every partition plus the 33 sectors of the backup.
    smallest = (last_end + 1 + 33) * 512
    with pytest.raises(InvalidArgumentError, match=f"partition 5 ends at sector {last_end}"):
        relocate_gpt_backup(table, smallest - 512)
    new_table, writes = relocate_gpt_backup(table, smallest)
    apply(disk, writes)
    with disk.open("r+b") as f:
        f.truncate(smallest)
    assert "No problems found" in sgdisk_verify(disk)
    proc = run("sfdisk", "--json", disk)
    assert proc.stderr == b""
    reference = sfdisk_json(disk)
    assert reference["lastlba"] == last_end
    assert_matches_sfdisk(read_table(disk), reference)
    assert_matches_sfdisk(new_table, reference)
