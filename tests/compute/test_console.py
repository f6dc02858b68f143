"""ConsoleWatcher: lines, bounded memory, the expected text found however the stream is cut."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagewright.compute.console import ConsoleWatcher
from imagewright.errors import InvalidArgumentError

MARKER = "imagewright-testguest: up"


def test_match_returns_the_whole_line_once() -> None:
    seen: list[str] = []
    watcher = ConsoleWatcher(MARKER, on_line=seen.append)
    assert watcher.feed(b"[    1.0] booting\r\n") is None
    assert watcher.feed(b"imagewright-testguest: up hostname=a swaps=1 root=/dev/vda\r\n") == (
        "imagewright-testguest: up hostname=a swaps=1 root=/dev/vda"
    )
    assert watcher.feed(b"imagewright-testguest: up again\n") is None  # only the first match counts
    assert watcher.matched_line == "imagewright-testguest: up hostname=a swaps=1 root=/dev/vda"
    assert seen == ["[    1.0] booting", watcher.matched_line, "imagewright-testguest: up again"]


def test_match_in_a_line_still_being_printed() -> None:
    watcher = ConsoleWatcher("login:")
    assert watcher.feed(b"testguest log") is None
    assert watcher.feed(b"in: ") == "testguest login: "


def test_tail_is_bounded_and_keeps_the_last_lines() -> None:
    watcher = ConsoleWatcher(None, tail_lines=5)
    for i in range(10_000):
        watcher.feed(f"line {i}\n".encode())
    assert watcher.last_lines() == [f"line {i}" for i in range(9995, 10_000)]


def test_an_endless_line_does_not_grow_memory_and_is_still_searched() -> None:
    watcher = ConsoleWatcher("NEEDLE", tail_lines=3, max_line_bytes=1024)
    for _ in range(1000):
        assert watcher.feed(b"x" * 1000) is None
    assert len(watcher._partial) <= 1024 + 1000
    assert watcher.feed(b"xxNEE") is None
    assert watcher.feed(b"DLExx") is not None


def test_control_characters_and_bad_utf8_are_cleaned() -> None:
    watcher = ConsoleWatcher(None)
    watcher.feed(b"\x1b[2J\x1b[1;1Hgrub\xff menu\r\n")
    assert watcher.last_lines() == ["[2J[1;1Hgrub\ufffd menu"]


def test_expect_must_be_one_line() -> None:
    with pytest.raises(InvalidArgumentError):
        ConsoleWatcher("two\nlines")
    with pytest.raises(InvalidArgumentError):
        ConsoleWatcher("")


@settings(max_examples=200, deadline=None)
@given(
    before=st.binary(max_size=300).filter(lambda b: MARKER.encode() not in b),
    after=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=12),
    present=st.booleans(),
)
def test_found_however_the_stream_is_chunked(
    before: bytes, after: bytes, cuts: list[int], present: bool
) -> None:
    stream = before + b"\n" + (MARKER.encode() + b" hostname=x" if present else b"nothing") + b"\r\n" + after
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    watcher = ConsoleWatcher(MARKER, tail_lines=4, max_line_bytes=64)
    results = [watcher.feed(stream[a:b]) for a, b in itertools.pairwise(points)]
    watcher.finish()
    matches = [r for r in results if r is not None]
    assert watcher.matched == present
    assert len(matches) == (1 if present else 0)
    if present:
        assert MARKER in matches[0]


def test_a_match_in_a_partial_line_is_completed_when_the_line_ends() -> None:
    watcher = ConsoleWatcher(MARKER)
    assert watcher.feed(b"imagewright-testguest: up host") == "imagewright-testguest: up host"
    assert watcher.matched and not watcher.match_complete
    assert watcher.feed(b"name=x ") is None
    assert not watcher.match_complete
    assert watcher.feed(b"root=/dev/vda\r\nnext") is None
    assert watcher.match_complete
    assert watcher.matched_line == "imagewright-testguest: up hostname=x root=/dev/vda"
