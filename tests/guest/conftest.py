"""Fixture images for guest tests: built once per module from a sysprep-like tree, copied per test."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.guest.images import GuestImage, flat_ext4, partitioned_ext4, sysprep_tree


@pytest.fixture(scope="module")
def guest_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sysprep_tree(tmp_path_factory.mktemp("tree") / "root")


@pytest.fixture(scope="module")
def flat_template(guest_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    return flat_ext4(guest_tree, tmp_path_factory.mktemp("flat") / "flat.raw")


@pytest.fixture(scope="module")
def mbr_template(guest_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    return partitioned_ext4(guest_tree, tmp_path_factory.mktemp("mbr") / "mbr.raw", table="dos")


@pytest.fixture(scope="module")
def gpt_template(guest_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    return partitioned_ext4(guest_tree, tmp_path_factory.mktemp("gpt") / "gpt.raw", table="gpt")


def _copier(template: GuestImage, directory: Path) -> GuestImage:
    target = directory / template.path.name
    shutil.copyfile(template.path, target)
    return GuestImage(target, template.offset, template.fmt)


@pytest.fixture
def flat_image(flat_template: GuestImage, tmp_path: Path) -> GuestImage:
    return _copier(flat_template, tmp_path)


@pytest.fixture
def mbr_image(mbr_template: GuestImage, tmp_path: Path) -> GuestImage:
    return _copier(mbr_template, tmp_path)


@pytest.fixture
def gpt_image(gpt_template: GuestImage, tmp_path: Path) -> GuestImage:
    return _copier(gpt_template, tmp_path)


@pytest.fixture
def copy_image(tmp_path: Path) -> Callable[[GuestImage], GuestImage]:
    return lambda template: _copier(template, tmp_path)
