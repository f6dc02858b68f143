"""``qcow2_stream``: the qcow2 publish writes from its grains, read back by qemu-img (check: no
errors, no leaks; compare: identical to the source; info: version 3, compat 1.1) — odd sizes
(a last cluster cut short), an image with no data at all, data in several L2 ranges (512 MiB
each), data in the very last bytes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tests.fixtures.tools import qemu_img

from imagewright.package.publish import publish
from imagewright.package.qcow2_stream import CLUSTER, L2_ENTRIES

pytestmark = pytest.mark.integration

MiB = 1 << 20
RANGE = L2_ENTRIES * CLUSTER

CASES = {
    "odd-size": (40 * MiB + 3 * 512, [(0, 8192), (33 * MiB, 3 * MiB), (40 * MiB + 3 * 512 - 700, 700)]),
    "empty": (16 * MiB, []),
    "three-l2-ranges": (2 * RANGE + 64 * MiB, [(5, 100), (RANGE - 10, 20), (2 * RANGE + 1, CLUSTER + 2)]),
    "one-short-cluster": (4096, [(0, 4096)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_qemu_img_reads_the_qcow2_as_the_source(case: str, tmp_path: Path) -> None:
    size, writes = CASES[case]
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(size)
        for offset, length in writes:
            f.seek(offset)
            f.write(random.Random(offset).randbytes(length))
    out = tmp_path / "out"
    out.mkdir()
    result = publish(raw, out, ("qcow2",))
    qcow2 = out / "disk.qcow2"
    (published,) = result.files
    assert published.size == qcow2.stat().st_size
    check = json.loads(qemu_img("check", "-f", "qcow2", "--output=json", qcow2))
    assert check.get("leaks", 0) == 0 and check.get("corruptions", 0) == 0 and check["check-errors"] == 0
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "qcow2", raw, qcow2)
    info = json.loads(qemu_img("info", "-f", "qcow2", "--output=json", qcow2))
    assert info["virtual-size"] == size and info["cluster-size"] == CLUSTER
    assert info["format-specific"]["data"]["compat"] == "1.1"
    used = {c for o, n in writes for c in range(o // CLUSTER, -(-(o + n) // CLUSTER))}
    # Header, the data clusters, an L2 per range used, the L1, one refcount block and table.
    ranges = {c // L2_ENTRIES for c in used}
    assert qcow2.stat().st_size == CLUSTER * (1 + len(used) + len(ranges) + 1 + 2)
