"""``imagewright publish --to qcow2,ova,registry`` against the real Glance, read back by openstacksdk.

The peer is OpenStack Glance 33 from PyPI (tests/fixtures/glance.py) in its own no-auth
deployment (``unauthenticated=True``: Glance's ``UnauthenticatedContextMiddleware``, no Keystone),
reached by ``imagewright --cloud glance`` through a clouds.yaml with ``auth_type: none`` and an
``image_endpoint_override`` — the same openstacksdk session path as a Keystone cloud, minus the
token. tests/registry/test_publish_registry.py does the same against our own registry.

What is cross-checked, each value from an independent reader: Glance's ``checksum`` is md5sum's
of the published file and ``os_hash_value`` hashlib's sha512 of it (Glance computes both as it
stores the bytes; publish checked them too, and reports the same); ``size`` is the file's;
Glance's own ``virtual_size`` (its format inspector reading the qcow2 header) is qemu-img's;
the formats, the status and the ``--property`` are as published. Downloaded again with
openstacksdk, each image is the published file byte for byte, and the qcow2's guest is the
source's (``qemu-img compare``). Glance records nothing about the OVA's signature: the
``imagewright_ova_*`` properties come from our registry's upload gate, not from publish.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.glance import GlanceServer, glance_server
from tests.fixtures.registry import BIN
from tests.fixtures.tools import qemu_img, qemu_img_info, run, write_at
from tests.package.helpers import MiB, make_disk, make_key

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("glance-publish")]

SIZE = 24 * MiB


@pytest.fixture(scope="module")
def glance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with glance_server(tmp_path_factory.mktemp("glance"), unauthenticated=True) as server:
        yield server


@pytest.fixture(scope="module")
def clouds(glance: GlanceServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return glance.clouds_yaml(tmp_path_factory.mktemp("clouds") / "clouds.yaml")


def sdk(clouds: Path) -> Any:
    """An openstacksdk connection to the Glance of ``clouds`` (not imagewright's client)."""
    import openstack.config
    import openstack.connection

    region = openstack.config.OpenStackConfig(config_files=[str(clouds)]).get_one(cloud="glance")
    return openstack.connection.Connection(config=region)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def test_publish_to_glance_and_read_back_with_openstacksdk(clouds: Path, tmp_path: Path) -> None:
    raw = make_disk(tmp_path / "disk.raw", SIZE, [(0, 8192, 0x71), (17 * MiB, 1 * MiB, 0x72)])
    write_at(raw, 3 * MiB, random.Random(7).randbytes(2 * MiB))
    source = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, source)
    key, cert = make_key(tmp_path, "user")
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    published = subprocess.run(
        [str(BIN / "imagewright"), "publish", str(source), "--to", "qcow2,ova,registry", "-d", str(out),
         "--name", "web", "--sign", str(key), "--sign-cert", str(cert), "--cloud", "glance",
         "--property", "os_distro=debian", "--json"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    report = json.loads(published.stdout)
    disk, ova = report["registry"]
    assert (disk["file"], ova["file"]) == (str(out / "web.qcow2"), str(out / "web.ova"))

    connection = sdk(clouds)
    try:
        for uploaded, file, formats in (
            (disk, out / "web.qcow2", ("qcow2", "bare")),
            (ova, out / "web.ova", ("vmdk", "ova")),
        ):
            image = connection.image.get_image(uploaded["id"])
            assert (image.disk_format, image.container_format, image.status) == (*formats, "active")
            assert image.size == file.stat().st_size == uploaded["size"]
            assert image.checksum == run("md5sum", file).stdout.decode().split()[0] == uploaded["checksum"]
            assert image.hash_algo == "sha512" == uploaded["os_hash_algo"]
            assert image.hash_value == file_digest(file, "sha512") == uploaded["os_hash_value"]
            assert image.os_distro == "debian"
            assert not any(name.startswith("imagewright_ova") for name in image.properties)
            downloaded = tmp_path / f"downloaded-{file.name}"
            connection.image.download_image(image, output=str(downloaded))
            assert file_digest(downloaded, "sha256") == file_digest(file, "sha256")

        image = connection.image.get_image(disk["id"])
        assert image.name == "web"
        assert image.virtual_size == qemu_img_info(out / "web.qcow2")["virtual-size"] == SIZE
        assert disk["virtual_size"] == SIZE
        assert connection.image.get_image(ova["id"]).name == "web.ova"
        assert "Images are identical" in qemu_img(
            "compare", "-f", "raw", "-F", "qcow2", raw, tmp_path / "downloaded-web.qcow2"
        )
    finally:
        for uploaded in (disk, ova):
            connection.image.delete_image(uploaded["id"], ignore_missing=True)
        connection.close()
