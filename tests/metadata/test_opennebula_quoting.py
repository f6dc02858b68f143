"""context.sh quoting: any text → ``KEY='…'`` → a real POSIX shell → the same text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.metadata.conftest import source_in_shell

from imagewright.errors import InvalidArgumentError
from imagewright.metadata.opennebula import HEADER, render_context_sh, shell_single_quote

# Any Unicode text a shell variable can hold: no NUL, no lone surrogates (not encodable).
SHELL_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200
)
# Weighted towards what breaks naive quoting.
NASTY_TEXT = st.text(alphabet=st.sampled_from(list("'\"$`\\\n\t !;&|(){}*?#~=a1é")), max_size=60)


def _round_trip(shells: dict[str, list[str]], directory: Path, values: list[str]) -> None:
    variables = {f"V{i}": value for i, value in enumerate(values)}
    script = directory / "context.sh"
    script.write_bytes(render_context_sh(variables))
    # One shell run per shell prints every value NUL-separated (NUL cannot occur in them).
    expression = "printf '%s\\0' " + " ".join(f'"$V{i}"' for i in range(len(values)))
    expected = b"".join(v.encode("utf-8") + b"\0" for v in values)
    for name, shell in shells.items():
        assert source_in_shell(shell, script, expression) == expected, name


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(SHELL_TEXT, NASTY_TEXT), min_size=1, max_size=6))
def test_any_text_survives_dash_and_busybox(
    values: list[str], shells: dict[str, list[str]], tmp_path: Path
) -> None:
    _round_trip(shells, tmp_path, values)


def test_known_hard_cases(shells: dict[str, list[str]], tmp_path: Path) -> None:
    _round_trip(
        shells,
        tmp_path,
        ["it's", "'", "''", "'\\''", "$HOME", "`id`", "$(id)", "a\nb\n", "\n", "", "trailing\\", "ünï ✓ 🚀"],
    )


def test_sourcing_runs_nothing(shells: dict[str, list[str]], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    script = tmp_path / "context.sh"
    script.write_bytes(
        render_context_sh({"A": f"$(touch {marker})", "B": f"`touch {marker}`", "C": f"'; touch {marker}; '"})
    )
    for shell in shells.values():
        source_in_shell(shell, script, "true")
    assert not marker.exists()


def test_layout_is_what_opennebula_writes() -> None:
    text = render_context_sh({"SSH_PUBLIC_KEY": "k1\nk2", "HOSTNAME": "it's"}).decode()
    assert text == f"{HEADER}\nHOSTNAME='it'\\''s'\nSSH_PUBLIC_KEY='k1\nk2'\n"


def test_bash_reads_it_like_cloud_init_does(tmp_path: Path) -> None:
    # cloud-init's OpenNebula datasource sources context.sh with `bash -e`.
    script = tmp_path / "context.sh"
    script.write_bytes(render_context_sh({"X": "a'b\n$c"}))
    proc = subprocess.run(
        ["bash", "-e", "-c", '. "$1"; printf %s "$X"', "sh", str(script)], capture_output=True, check=True
    )
    assert proc.stdout == b"a'b\n$c"


def test_nul_and_bad_names_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="NUL"):
        shell_single_quote("a\x00b")
    with pytest.raises(InvalidArgumentError, match="UTF-8"):
        shell_single_quote("\udc80")
    for bad in ("1A", "A-B", "A B", "", "A;rm"):
        with pytest.raises(InvalidArgumentError, match="shell variable name"):
            render_context_sh({bad: "x"})
