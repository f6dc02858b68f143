"""Every hostile container case is refused by the container readers themselves, quickly,
with the reason it was registered with (the integration test runs them through the CLI)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.fixtures import hostile_containers
from tests.fixtures.hostile import CASES, HostileCase

from imagewright.binary import FileSource
from imagewright.errors import ImageFormatError
from imagewright.formats.base import HEAD_SIZE, Limits
from imagewright.formats.containers import open_container, probe_container

CONTAINER_CASES = [case for case in CASES if case.build.__module__ == hostile_containers.__name__]


def test_every_required_category_is_registered() -> None:
    names = {case.name for case in CONTAINER_CASES}
    assert {
        "tar-absolute-member-path",
        "tar-dotdot-member-path",
        "ova-symlink-member",
        "ova-hardlink-member",
        "ova-device-member",
        "ovf-billion-laughs",
        "ovf-external-entity",
        "ovf-href-dotdot",
        "ovf-href-url",
        "ovf-href-absolute",
        "ova-missing-referenced-disk",
        "tar-member-size-beyond-eof",
        "gzip-bomb",
        "tar-gz-dotdot-deep-inside",
        "xz-truncated",
    } <= names


@pytest.mark.parametrize("case", CONTAINER_CASES, ids=lambda case: case.name)
def test_hostile_container_is_refused(case: HostileCase, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    # CPU time, not wall time: what the case costs, not how busy the machine is.
    started = time.process_time()
    with FileSource(path) as src:
        assert probe_container(src, src.pread(0, HEAD_SIZE)) is not None
        try:
            opened = open_container(src, Limits(), name_hint=path.name)
        except ImageFormatError as err:
            reasons = [str(err)]
        else:
            reasons = opened.problems
    elapsed = time.process_time() - started
    assert any(case.reason.lower() in reason.lower() for reason in reasons), reasons
    for reason in reasons:
        assert reason and "\n" not in reason
    assert elapsed < 5, f"{case.name} took {elapsed:.1f} s"
