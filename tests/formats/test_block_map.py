"""formats.block_map: the markers counted and the other entries listed exactly as a plain loop
over the entries would, for any entries (hypothesis), including bytes that look like a marker
only across two entries."""

from __future__ import annotations

from array import array

from hypothesis import given
from hypothesis import strategies as st

from imagewright.formats.block_map import sort_block_map

UNALLOCATED = 0xFFFFFFFF
DISCARDED = 0xFFFFFFFE
# Values whose bytes, next to a marker, spell a marker across the entry boundary.
TRICKY = [0, 1, 0xFF, 0xFFFFFF00, 0x00FFFFFF, 0xFFFFFFFD, 0xFEFFFFFF, 0xFFFFFEFF, 0xFFFF0000]
ENTRY = st.one_of(st.sampled_from([UNALLOCATED, DISCARDED, *TRICKY]), st.integers(0, 0xFFFFFFFF))


@given(st.lists(ENTRY, max_size=400), st.sampled_from([(UNALLOCATED, DISCARDED), (UNALLOCATED,)]))
def test_sorting_agrees_with_a_plain_loop(values: list[int], markers: tuple[int, ...]) -> None:
    result = sort_block_map(array("I", values), markers)
    assert result.marker_counts == {marker: values.count(marker) for marker in markers}
    assert result.others == [index for index, value in enumerate(values) if value not in markers]


def test_a_long_run_of_trailing_markers_is_read_once() -> None:
    # 2^20 entries (a 2 TiB VHD's BAT) with one block at the start: linear, not quadratic.
    entries = array("I", [UNALLOCATED]) * (1 << 20)
    entries[3] = 7
    result = sort_block_map(entries, (UNALLOCATED, DISCARDED))
    assert result.others == [3]
    assert result.marker_counts == {UNALLOCATED: (1 << 20) - 1, DISCARDED: 0}


def test_a_mostly_allocated_map_is_sorted_too() -> None:
    entries = array("I", range(1000))
    entries[10] = UNALLOCATED
    result = sort_block_map(entries, (UNALLOCATED, DISCARDED))
    assert result.others == [index for index in range(1000) if index != 10]
    assert result.marker_counts == {UNALLOCATED: 1, DISCARDED: 0}
