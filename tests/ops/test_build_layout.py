"""The layout arithmetic of ``build`` for every firmware: partitions, numbering, the smallest disk,
and the choice of table and firmware from what was (not) given."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagewright.errors import BuildError, InvalidArgumentError
from imagewright.ops.build.layout import (
    DEFAULT_ESP_BYTES,
    LayoutShape,
    minimum_disk_size,
    plan_layout,
    resolve_shape,
    root_partition_size,
)

MiB = 1 << 20
GiB = 1 << 30


def test_hybrid_layout() -> None:
    layout = plan_layout(GiB, LayoutShape("gpt", "hybrid", swap_size=64 * MiB))
    assert [(p.number, p.role, p.start, p.sectors) for p in layout.partitions] == [
        (1, "bios-boot", 2048, 2048),
        (2, "esp", 4096, DEFAULT_ESP_BYTES // 512),
        (3, "swap", 208896, 64 * MiB // 512),
        # Root last, to the last aligned MiB before the backup GPT (1 GiB - 1 MiB).
        (4, "root", 208896 + 131072, 2097152 - 2048 - 208896 - 131072),
    ]
    assert layout.esp is not None and layout.esp.type_id == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert layout.core_image_lba == 2048
    assert 'type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System"' in layout.sfdisk_script()


def test_uefi_and_bios_layouts() -> None:
    uefi = plan_layout(GiB, LayoutShape("gpt", "uefi"))
    assert [(p.number, p.role, p.start) for p in uefi.partitions] == [(1, "esp", 2048), (2, "root", 206848)]
    assert uefi.bios_boot is None
    bios = plan_layout(GiB, LayoutShape("gpt", "bios"))
    assert [(p.number, p.role) for p in bios.partitions] == [
        (1, "bios-boot"),
        (2, "root"),
    ] and bios.esp is None
    mbr = plan_layout(GiB, LayoutShape("mbr", "bios"))
    assert [(p.number, p.role, p.bootable) for p in mbr.partitions] == [(1, "root", True)]
    mbr_swap = plan_layout(GiB, LayoutShape("mbr", "bios", swap_size=64 * MiB))
    assert [(p.number, p.role, p.start, p.sectors, p.bootable) for p in mbr_swap.partitions] == [
        (1, "swap", 2048, 131072, False),
        (2, "root", 2048 + 131072, 2097152 - 2048 - 131072, True),
    ]
    assert mbr_swap.core_image_capacity == 2047


def test_swap_comes_before_root_so_root_can_grow() -> None:
    """growpart grows a partition only up to the next one on the disk: root must end last."""
    for table, firmware in (("mbr", "bios"), ("gpt", "bios"), ("gpt", "uefi"), ("gpt", "hybrid")):
        layout = plan_layout(GiB, LayoutShape(table, firmware, swap_size=32 * MiB))  # type: ignore[arg-type]
        assert layout.partitions[-1].role == "root", (table, firmware)
        assert layout.swap is not None and layout.swap.number == layout.root.number - 1
        assert layout.swap.end + 1 == layout.root.start
        # Numbered in disk order, so sfdisk reports no "not in disk order" warning.
        assert [p.number for p in sorted(layout.partitions, key=lambda p: p.start)] == list(
            range(1, len(layout.partitions) + 1)
        )


@settings(max_examples=200, deadline=None)
@given(
    root=st.integers(1, 4096).map(lambda n: n * MiB - 7),
    swap=st.sampled_from([0, 1, 64 * MiB, 100 * MiB + 1]),
    shape=st.sampled_from([("mbr", "bios"), ("gpt", "bios"), ("gpt", "uefi"), ("gpt", "hybrid")]),
    esp=st.sampled_from([DEFAULT_ESP_BYTES, 8 * MiB, 300 * MiB]),
)
def test_minimum_disk_size_is_exact(root: int, swap: int, shape: tuple[str, str], esp: int) -> None:
    table, firmware = shape
    layout_shape = LayoutShape(table, firmware, swap_size=swap, esp_size=esp)  # type: ignore[arg-type]
    size = minimum_disk_size(root, layout_shape)
    assert size % MiB == 0
    assert root_partition_size(size, layout_shape) >= root
    smaller = size - MiB
    with contextlib.suppress(BuildError):  # one MiB less may leave no room for a root partition at all
        assert root_partition_size(smaller, layout_shape) < max(root, 8 * MiB)
    layout = plan_layout(size, layout_shape)
    ends = [(p.start, p.end) for p in layout.partitions]
    assert all(a_end < b_start for (_, a_end), (b_start, _) in itertools.pairwise(ends))
    assert all(p.start % 2048 == 0 for p in layout.partitions)
    assert layout.partitions[-1].role == "root"


@pytest.mark.parametrize(
    ("table", "firmware", "expected", "noted"),
    [
        (None, None, ("gpt", "hybrid"), False),
        ("gpt", None, ("gpt", "hybrid"), False),
        ("mbr", None, ("mbr", "bios"), True),
        (None, "bios", ("mbr", "bios"), False),
        (None, "uefi", ("gpt", "uefi"), False),
        ("gpt", "bios", ("gpt", "bios"), False),
    ],
)
def test_resolve_shape(
    table: str | None, firmware: str | None, expected: tuple[str, str], noted: bool
) -> None:
    shape, notes = resolve_shape(table, firmware)  # type: ignore[arg-type]
    assert (shape.table, shape.firmware) == expected
    assert bool(notes) is noted


@pytest.mark.parametrize("firmware", ["uefi", "hybrid"])
def test_mbr_cannot_boot_under_uefi(firmware: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"--firmware {firmware} needs a GPT disk"):
        resolve_shape("mbr", firmware)  # type: ignore[arg-type]


def test_esp_size_must_be_whole_mib() -> None:
    with pytest.raises(InvalidArgumentError, match="whole number of MiB"):
        LayoutShape("gpt", "uefi", esp_size=MiB + 512).check()
    LayoutShape("gpt", "bios", esp_size=MiB + 512).check()  # no ESP: its size does not matter
