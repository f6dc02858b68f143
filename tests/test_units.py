from __future__ import annotations

import pytest

from imagewright.errors import InvalidArgumentError
from imagewright.units import format_size, parse_size, parse_size_change


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512", 512),
        ("4G", 4 << 30),
        ("512MiB", 512 << 20),
        ("1.5g", 3 << 29),
        ("2048s", 1 << 20),
        ("1T", 1 << 40),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "4X", "-1G", "1.0000001k", "abc"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_size(text)


def test_parse_size_change() -> None:
    assert parse_size_change("+1G") == ("+", 1 << 30)
    assert parse_size_change("-512M") == ("-", 512 << 20)
    assert parse_size_change("8G") == ("=", 8 << 30)


def test_format_size() -> None:
    assert format_size(1 << 30) == "1 GiB"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(10) == "10 B"
