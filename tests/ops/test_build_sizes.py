"""build and sizes that are claims (issue 13, category 4): a sparse member is extracted by its
data regions (its holes cost nothing), and sizes no disk can hold are refused in one sentence
before anything is written."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures import tools

from imagewright.errors import BuildError
from imagewright.formats.base import Limits
from imagewright.ops.build import build
from imagewright.ops.build.source import TarballSource, open_source
from imagewright.ops.build.tarball import extract_tarball

pytestmark = pytest.mark.integration

GiB = 1 << 30
RunCli = Callable[..., Result]


def _sparse_tree(root: Path) -> Path:
    """A small root filesystem tree whose var/lib/big.img is 8 GiB with 8 KiB of data."""
    for name in ("etc", "usr", "bin", "boot", "var/lib"):
        (root / name).mkdir(parents=True)
    (root / "etc" / "hostname").write_text("sparse\n")
    big = root / "var" / "lib" / "big.img"
    with big.open("wb") as f:
        f.truncate(8 * GiB)
    tools.write_at(big, 0, b"head" * 1024)
    tools.write_at(big, 8 * GiB - 4096, b"tail" * 1024)
    return big


@pytest.mark.parametrize("compress", ["", "-z"])
def test_a_sparse_member_is_extracted_by_its_regions(compress: str, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    big = _sparse_tree(tree)
    archive = tmp_path / ("rootfs.tar.gz" if compress else "rootfs.tar")
    tools.run("tar", "--format=gnu", "-S", *([compress] if compress else []), "-C", tree, "-cf", archive, ".")
    source = open_source(archive)
    assert isinstance(source, TarballSource)
    staging = tmp_path / "staging"
    staging.mkdir()
    extract_tarball(source, staging)
    staged = staging / "var" / "lib" / "big.img"
    assert staged.stat().st_size == 8 * GiB
    assert staged.stat().st_blocks * 512 < 1 << 20  # the holes stayed holes
    with staged.open("rb") as f:
        assert f.read(4096) == b"head" * 1024
        f.seek(8 * GiB - 4096)
        assert f.read() == b"tail" * 1024
        f.seek(4 * GiB)
        assert f.read(65536) == bytes(65536)
    assert os.stat(big).st_size == staged.stat().st_size


def test_a_disk_larger_than_the_limit_is_refused_before_anything_is_written(
    testguest_tarball: Path, tmp_path: Path, run_cli: RunCli
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BuildError, match="more than the 1 GiB imagewright builds"):
        build(testguest_tarball, out / "disk.raw", size=2 * GiB, limits=Limits(max_virtual_size=GiB))
    result = run_cli(["build", "--from", testguest_tarball, "-o", out / "disk.raw", "--size", "17T"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "more than the 16 TiB imagewright builds" in lines[0], result.stderr
    assert list(out.iterdir()) == []
