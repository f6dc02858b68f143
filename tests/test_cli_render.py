"""``cli.render``: where it writes plain text, rich would have written exactly the same bytes."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagewright.cli.render import Report, new_console, stdout_console

STYLES = st.sampled_from(["", "green", "bold red", "red", "dim"])
#: What reports print: printable text, non-ASCII included.
PRINTABLE = st.text(
    st.characters(
        blacklist_categories=("Cs", "Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cn"), whitelist_characters=" "
    ),
    max_size=200,
)
#: Table cells as reports hold them: words, numbers, sizes.
PLAIN_CELL = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="[:"), max_size=18
)
#: Now and then something rich would change or that does not fit.
ODD = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["a:b", ":smile:", "[bold]x", "日本", "tab\tx", " padded ", "x" * 170]),
)


@st.composite
def reports(draw: st.DrawFn) -> Report:
    """Reports that are mostly plain, with an odd piece in about a third of them."""
    odd = draw(st.booleans()) and draw(st.booleans())
    text = st.one_of(PRINTABLE, ODD) if odd else PRINTABLE
    cell = st.one_of(PLAIN_CELL, PLAIN_CELL, PLAIN_CELL, ODD) if odd else PLAIN_CELL
    report = Report()
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            report.line(*draw(st.lists(st.one_of(text, st.tuples(text, STYLES)), max_size=3)))
            continue
        columns = draw(st.integers(1, 8))
        headings = [f"H{index}" * draw(st.integers(1, 3)) for index in range(columns)]
        rows = draw(st.lists(st.lists(cell, min_size=columns, max_size=columns), max_size=6))
        right = [h for h in headings if draw(st.booleans())]
        report.table(headings, rows, right=right)
    return report


def through_rich(report: Report) -> str:
    buffer = io.StringIO()
    report.write_rich(new_console(buffer))
    return buffer.getvalue()


@settings(max_examples=400, deadline=None)
@given(report=reports())
def test_plain_text_is_what_rich_writes(report: Report) -> None:
    if report.plain_is_exact():
        assert report.plain_text() == through_rich(report)


def test_the_plain_path_is_taken_for_ordinary_reports() -> None:
    report = Report()
    report.line("image:          disk.qcow2")
    report.line("verdict:        ", ("safe", "green"))
    report.line()
    report.table(
        ("Device", "Boot", "Start", "End", "Size", "Type", "Filesystem"),
        [
            ("1", "*", "2048", "1050623", "512 MiB", "EFI System", 'vfat LABEL="EFI"'),
            ("2", "", "1050624", "9", "1 GiB", "Linux filesystem", ""),
        ],
        right=("Start", "End", "Size"),
    )
    assert report.plain_is_exact()
    assert report.plain_text() == through_rich(report)
    assert report.plain_text().split("\n") == [
        "image:          disk.qcow2",
        "verdict:        safe",
        "",
        "Device  Boot    Start      End     Size  Type              Filesystem      ",
        '1       *        2048  1050623  512 MiB  EFI System        vfat LABEL="EFI"',
        "2             1050624        9    1 GiB  Linux filesystem                  ",
        "",
    ]


@pytest.mark.parametrize(
    "cell",
    ["[bold]markup[/bold]", ":smile:", "wide 日本", "tab\there", "x" * 161],
)
def test_what_rich_would_change_goes_through_rich(cell: str) -> None:
    report = Report()
    report.table(("A",), [(cell,)])
    assert not report.plain_is_exact()


@pytest.mark.parametrize("variable", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_forced_colour_goes_through_rich(
    variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, "1")
    stdout_console.cache_clear()  # rich settles its colours when a console is made
    try:
        report = Report()
        report.line("verdict: ", ("safe", "green"))
        report.write()
    finally:
        stdout_console.cache_clear()
    assert "\x1b[32msafe\x1b[0m" in capsys.readouterr().out
