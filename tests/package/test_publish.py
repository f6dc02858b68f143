"""``publish``: one read of the source, every target written from it, one checksum set;
every output read back by a reader that is not ours."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import mounted_tmpfs, qemu_img, run
from tests.package.helpers import (
    MiB,
    libvmdk_sha256,
    make_disk,
    pass_reads,
    publish_keys,
    publish_sources,
    sha256_file,
    tar_members,
)
from tests.package.test_bundle import decrypt_by_hand

from imagewright.package.ova_verify import verify_ova
from imagewright.programs.runner import record_invocations

pytestmark = pytest.mark.integration

SIZE = 40 * MiB


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return publish_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("publish-src")
    return publish_sources(work, SIZE, [(0, 8192, 0x71), (33 * MiB, 3 * MiB, 0x72)], 5 * MiB, seed=3)


def test_every_target_from_one_read_each_read_back_by_an_independent_reader(
    sources: tuple[Path, Path],
    keys: dict[str, tuple[Path, Path]],
    tmp_path: Path,
    run_cli: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw, qcow2 = sources
    out = tmp_path / "out"
    out.mkdir()
    with record_invocations() as log, pass_reads(monkeypatch) as reads:
        result: Result = run_cli(  # type: ignore[operator]
            ["publish", qcow2, "--to", "qcow2,raw.gz,ova,bundle,vmdk", "-d", out, "--os", "debian64",
             "--user", "123456789012", "--cert", keys["user"][1], "--privatekey", keys["user"][0],
             "--ec2cert", keys["cloud"][1], "--sign", keys["user"][0], "--sign-cert", keys["user"][1],
             "--json"]
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    # One read of the source: the pass streams it once (a qcow2 by imagewright's own guest
    # view); the qcow2 output is written from the same grains (qcow2_stream), and no qemu-img
    # runs over the data at all.
    assert reads == [str(qcow2)]
    assert [argv for argv in log.argvs if "qemu-img" in argv[0]] == []

    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["SHA256SUMS", "disk.qcow2", "disk.raw.gz", "disk.ova", "disk.vmdk", "disk.img.manifest.xml"]
        + [f["path"].rsplit("/", 1)[-1] for f in report["files"] if ".part." in f["path"]]
    )
    # The checksum set: sha256sum agrees with every line, and the table says the same.
    check = run("bash", "-c", f"cd {out} && sha256sum -c --strict SHA256SUMS")
    assert check.stdout.decode().count(": OK") == len(report["files"])
    for published in report["files"]:
        assert sha256_file(Path(published["path"])) == published["sha256"]

    # Each output as its own readers see it.
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "qcow2", raw, out / "disk.qcow2")
    assert "No errors were found" in qemu_img("check", "-f", "qcow2", out / "disk.qcow2")
    assert gzip.decompress((out / "disk.raw.gz").read_bytes()) == raw.read_bytes()
    assert libvmdk_sha256(out / "disk.vmdk") == (SIZE, sha256_file(raw))
    assert tar_members(out / "disk.ova") == ["disk.ovf", "disk.mf", "disk.cert", "disk-disk1.vmdk"]
    verification = verify_ova(out / "disk.ova")
    assert verification.ok, verification.problems
    gz = decrypt_by_hand(out, out / "disk.img.manifest.xml", keys["user"][0])
    extracted = tmp_path / "hand"
    extracted.mkdir()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(gz))) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.size) == ("disk.img", SIZE)
        tar.extractall(extracted, filter="data")
    assert sha256_file(extracted / "disk.img") == sha256_file(raw)

    # One compression: the raw.gz's deflate blocks are inside the bundle's gzip stream, as they are.
    raw_gz = (out / "disk.raw.gz").read_bytes()
    assert raw_gz[10:-10] in gz
    assert len(raw_gz[10:-10]) > 2 * MiB


def test_the_table_and_refusals(sources: tuple[Path, Path], tmp_path: Path, run_cli: object) -> None:
    raw, _ = sources
    out = tmp_path / "out"
    out.mkdir()
    result: Result = run_cli(["publish", raw, "--to", "raw.gz,vmdk", "-d", out])  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["target", "file", "size", "sha256"]
    assert lines[2].split()[:2] == ["raw.gz", "disk.raw.gz"] and lines[3].split()[:2] == ["vmdk", "disk.vmdk"]
    unknown: Result = run_cli(["publish", raw, "--to", "qcow2,floppy", "-d", out])  # type: ignore[operator]
    assert unknown.exit_code == 1 and "'floppy' is not a publish target" in unknown.stderr
    keys: Result = run_cli(["publish", raw, "--to", "bundle", "-d", out])  # type: ignore[operator]
    assert keys.exit_code == 2 and "needs --user, --cert, --privatekey and --ec2cert" in keys.output
    again: Result = run_cli(["publish", raw, "--to", "raw.gz", "-d", out])  # type: ignore[operator]
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_a_refused_source_leaves_the_directory_as_it_was(tmp_path: Path, run_cli: object) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", evil, "1M")
    out = tmp_path / "out"
    out.mkdir()
    result: Result = run_cli(["publish", evil, "--to", "qcow2,raw.gz,ova", "-d", out])  # type: ignore[operator]
    assert result.exit_code == 1 and "backing file" in result.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("compressor", ["gzip", "xz", "zstd"])
def test_a_compressed_raw_source_is_streamed_without_a_scratch_copy(
    compressor: str, tmp_path: Path, run_cli: object
) -> None:
    """publish reads a ``disk.raw.<gz|xz|zst>`` the way convert does: decompressed as it is
    judged and handed on, never spooled. The proof: 96 MiB of (compressible, non-zero) data
    published into a 40 MiB filesystem, where a decompressed scratch copy could not fit; and
    qemu-img never reads the source (only the qcow2 target's own sparse raw, on the same
    small filesystem, would — so no qcow2 target here)."""
    size = 128 * MiB
    raw = make_disk(tmp_path / "disk.raw", size, [(0, 8192, 0x61), (16 * MiB, 96 * MiB, 0x62)])
    packed = tmp_path / ("disk.raw." + {"gzip": "gz", "xz": "xz", "zstd": "zst"}[compressor])
    run("bash", "-c", f"{compressor} -c {raw} > {packed}")
    with mounted_tmpfs(tmp_path / "small", "40m") as out:
        with record_invocations() as log:
            result: Result = run_cli(  # type: ignore[operator]
                ["publish", packed, "--to", "raw.gz,vmdk", "-d", out, "--name", "disk", "--json"]
            )
        assert result.exit_code == 0, result.output
        assert [argv for argv in log.argvs if "qemu-img" in argv[0]] == []
        report = json.loads(result.stdout)
        assert report["source_format"] == "raw" and report["virtual_size"] == size
        assert sorted(p.name for p in out.iterdir()) == ["SHA256SUMS", "disk.raw.gz", "disk.vmdk"]
        check = run("bash", "-c", f"cd {out} && sha256sum -c --strict SHA256SUMS")
        assert check.stdout.decode().count(": OK") == 2
        unpacked = tmp_path / "unpacked.raw"
        run("bash", "-c", f"gzip -dc {out / 'disk.raw.gz'} > {unpacked}")
        assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "raw", raw, unpacked)
        assert libvmdk_sha256(out / "disk.vmdk") == (size, sha256_file(raw))
