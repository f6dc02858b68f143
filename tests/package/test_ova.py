"""``package ova`` end to end, every OVA read back by readers that are not ours: GNU tar
(order, USTAR), sha256sum/sha1sum (the manifest), ``openssl dgst -verify`` (the signature),
xmlschema (the descriptor's structure), qemu-img and libvmdk (the disk); then our own
``package verify`` and ``convert vm.ova``."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import qemu_img, qemu_img_info, run
from tests.package.helpers import (
    MiB,
    extract,
    libvmdk_sha256,
    make_disk,
    make_key,
    ovf_schema,
    pass_reads,
    sha256_file,
    tar_members,
)

from imagewright.formats.containers.ovf import parse_descriptor
from imagewright.inspection import inspect_image
from imagewright.package.ova import OvaOptions, package_ova
from imagewright.package.ova_verify import verify_ova
from imagewright.package.ovf_descriptor import MachineSpec
from imagewright.package.signing import load_certificate_file, load_signer
from imagewright.programs.runner import record_invocations

pytestmark = pytest.mark.integration

SIZE = 80 * MiB
WRITES = [(0, 4096, 0x61), (5 * MiB + 123, 300_000, 0x62), (40 * MiB, 2 * MiB, 0x63), (SIZE - 512, 512, 0x64)]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ova")


@pytest.fixture(scope="module")
def raw(work: Path) -> Path:
    return make_disk(work / "disk.raw", SIZE, WRITES)


@pytest.fixture(scope="module")
def qcow2(work: Path, raw: Path) -> Path:
    out = work / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, out)
    return out


@pytest.fixture(scope="module")
def signer_files(work: Path) -> tuple[Path, Path]:
    return make_key(work, "signer")


def cli_json(run_cli: object, args: list[object]) -> dict[str, object]:
    result: Result = run_cli(args)  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize(("version", "digest"), [("1.0", "sha256"), ("2.0", "sha512"), ("1.0", "sha1")])
def test_a_signed_ova_is_read_back_by_tar_sha_sums_openssl_xmlschema_qemu_img_and_libvmdk(
    version: str,
    digest: str,
    qcow2: Path,
    raw: Path,
    signer_files: tuple[Path, Path],
    tmp_path: Path,
    run_cli: object,
) -> None:
    key, cert = signer_files
    ova = tmp_path / "web server.ova"
    report = cli_json(
        run_cli,
        ["package", "ova", qcow2, "-o", ova, "--name", "web", "--cpus", "2", "--memory", "2048",
         "--nic", "vmxnet3", "--os", "debian64", "--ovf-version", version, "--digest", digest,
         "--product", "Web <&> Server", "--vendor", "Example", "--version", "1.2", "--cdrom",
         "--sign", key, "--cert", cert, "--json"],
    )  # fmt: skip
    assert report["signed"] is True and report["size"] == ova.stat().st_size

    # GNU tar: the order streaming importers need, flat names, plain USTAR headers.
    assert tar_members(ova) == ["web.ovf", "web.mf", "web.cert", "web-disk1.vmdk"]
    with tarfile.open(ova) as tar:
        assert {m.name: m.size for m in tar.getmembers()}["web-disk1.vmdk"] > 0
    with ova.open("rb") as f:
        assert f.read(512)[257:265] == b"ustar\x0000"
    files = extract(ova, tmp_path / "x")

    # The manifest: one line per file, the digests sha*sum computes.
    algorithm = digest.upper()
    lines = (files / "web.mf").read_text().splitlines()
    sums = {}
    for name in ("web.ovf", "web-disk1.vmdk"):
        sums[name] = run(f"{digest}sum", files / name).stdout.decode().split()[0]
    assert lines == [
        f"{algorithm}(web.ovf)= {sums['web.ovf']}",
        f"{algorithm}(web-disk1.vmdk)= {sums['web-disk1.vmdk']}",
    ]

    # The certificate: the signature of the .mf, which openssl verifies with the certificate's key.
    cert_text = (files / "web.cert").read_text()
    first, pem = cert_text.split("\n", 1)
    match = re.fullmatch(rf"{algorithm}\(web\.mf\)= ([0-9a-f]+)", first)
    assert match is not None
    (tmp_path / "sig").write_bytes(bytes.fromhex(match.group(1)))
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    pub = run("openssl", "x509", "-in", files / "web.cert", "-pubkey", "-noout").stdout
    (tmp_path / "pub.pem").write_bytes(pub)
    verified = run("openssl", "dgst", f"-{digest}", "-verify", tmp_path / "pub.pem", "-signature",
                   tmp_path / "sig", files / "web.mf")  # fmt: skip
    assert verified.stdout.strip() == b"Verified OK"

    # The descriptor: valid against the OVF structure rules; says what the members are.
    ovf = (files / "web.ovf").read_bytes()
    ovf_schema(version, tmp_path).validate(str(files / "web.ovf"))  # type: ignore[attr-defined]
    reading = parse_descriptor(ovf, 1 << 50)
    assert reading.problems == []
    descriptor = reading.descriptor
    assert descriptor.version == ("1.x" if version == "1.0" else "2.x")
    (ref,) = descriptor.references
    (disk,) = descriptor.disks
    assert (ref.href, ref.size) == ("web-disk1.vmdk", (files / "web-disk1.vmdk").stat().st_size)
    assert (disk.capacity, disk.file_ref) == (SIZE, ref.id)
    assert disk.populated_size == report["populated_size"]
    (system,) = descriptor.virtual_systems
    assert (system.name, system.os_id, system.os_type) == ("web", 96, "debian10_64Guest")
    hardware = system.hardware
    assert (hardware.cpus, hardware.memory_mib, hardware.cdroms) == (2, 2048, 1)
    assert [n.subtype for n in hardware.nics] == ["VmxNet3"]
    assert hardware.disks == ["ovf:/disk/vmdisk1"]
    assert "<Product>Web &lt;&amp;&gt; Server</Product>" in ovf.decode()

    # The disk: what qemu-img and libvmdk read is the source's guest, byte for byte.
    vmdk = files / "web-disk1.vmdk"
    assert "No errors were found" in qemu_img("check", "-f", "vmdk", vmdk)
    assert qemu_img_info(vmdk, "vmdk")["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "vmdk", raw, vmdk)
    assert libvmdk_sha256(vmdk) == (SIZE, sha256_file(raw))

    # And our own readers agree.
    assert inspect_image(ova).verdict.safe
    verification = verify_ova(ova)
    assert verification.ok, verification.problems
    assert verification.signature is not None and verification.signature.chain is not None
    assert verification.signature.chain.status == "self-signed"


def test_an_unsigned_ova_has_no_certificate_and_verify_says_so(raw: Path, tmp_path: Path) -> None:
    ova = tmp_path / "plain.ova"
    result = package_ova(raw, ova, OvaOptions(MachineSpec(name="plain")))
    assert [m.name for m in result.members] == ["plain.ovf", "plain.mf", "plain-disk1.vmdk"]
    assert tar_members(ova) == ["plain.ovf", "plain.mf", "plain-disk1.vmdk"]
    verification = verify_ova(ova)
    assert verification.ok and verification.warnings == ["the package is not signed"]


def test_the_source_is_read_once_and_nothing_is_left_behind(
    qcow2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ova = tmp_path / "once.ova"
    with record_invocations() as log, pass_reads(monkeypatch) as reads:
        package_ova(qcow2, ova, OvaOptions(MachineSpec(name="once")), checksums=("sha256",))
    # One pass over the source, by imagewright's own qcow2 guest view: no program runs on it.
    assert reads == [str(qcow2)]
    assert log.programs() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["once.ova"]


def test_a_ca_issued_signer_is_trusted_with_its_ca_and_not_without(raw: Path, tmp_path: Path) -> None:
    ca = make_key(tmp_path, "ca", ca=True)
    key, cert = make_key(tmp_path, "leaf", issuer=ca)
    ova = tmp_path / "ca.ova"
    package_ova(raw, ova, OvaOptions(MachineSpec(name="ca"), signer=load_signer(key, cert)))
    trusted = verify_ova(
        ova, trusted=load_signer(ca[0], ca[1]).certificate and [load_signer(ca[0], ca[1]).certificate]
    )
    assert trusted.ok and trusted.signature is not None and trusted.signature.chain is not None
    assert trusted.signature.chain.status == "trusted"
    other = make_key(tmp_path, "other-ca", ca=True)
    untrusted = verify_ova(ova, trusted=load_certificate_file(other[1]))
    assert not untrusted.ok
    assert untrusted.problems[0].startswith("the signing certificate is not trusted")
    # Without --ca the chain cannot be followed: a warning, the package is still intact.
    alone = verify_ova(ova)
    assert alone.ok and "give --ca" in alone.warnings[0]


def test_cli_verify_reports_and_exits_by_the_verdict(
    raw: Path, signer_files: tuple[Path, Path], tmp_path: Path, run_cli: object
) -> None:
    key, cert = signer_files
    ova = tmp_path / "v.ova"
    package_ova(raw, ova, OvaOptions(MachineSpec(name="v"), signer=load_signer(key, cert)))
    ok: Result = run_cli(["package", "verify", ova, "--ca", cert])  # type: ignore[operator]
    assert ok.exit_code == 0, ok.output
    assert "signature:   SHA256 valid (CN=signer, trusted)" in ok.stdout
    assert "verdict:     ok" in ok.stdout
    data = cli_json(run_cli, ["package", "verify", ova, "--json"])
    assert data["ok"] is True and data["signature"]["chain"]["status"] == "self-signed"  # type: ignore[index]


def test_convert_takes_the_disk_out_of_an_ova_checked_in_the_same_read(
    qcow2: Path, raw: Path, signer_files: tuple[Path, Path], tmp_path: Path, run_cli: object
) -> None:
    key, cert = signer_files
    ova = tmp_path / "c.ova"
    package_ova(qcow2, ova, OvaOptions(MachineSpec(name="c"), signer=load_signer(key, cert)))
    out = tmp_path / "back.qcow2"
    result: Result = run_cli(["convert", ova, out])  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    assert "Images are identical" in qemu_img("compare", "-f", "raw", "-F", "qcow2", raw, out)
    assert "No errors were found" in qemu_img("check", "-f", "qcow2", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.qcow2", "c.ova"]


def test_cli_refuses_half_a_signing_pair_and_a_certificate_of_another_key(
    raw: Path, signer_files: tuple[Path, Path], tmp_path: Path, run_cli: object
) -> None:
    key, _ = signer_files
    ova = tmp_path / "x.ova"
    usage: Result = run_cli(["package", "ova", raw, "-o", ova, "--sign", key])  # type: ignore[operator]
    assert usage.exit_code == 2 and "--sign and --cert go together" in usage.output
    _, other_cert = make_key(tmp_path, "someone-else")
    wrong: Result = run_cli(["package", "ova", raw, "-o", ova, "--sign", key, "--cert", other_cert])  # type: ignore[operator]
    assert wrong.exit_code == 1
    assert "is not the certificate of the key" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert not ova.exists()
