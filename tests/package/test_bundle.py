"""EC2 image bundles: made by ``package bundle`` and taken apart by hand (openssl, gunzip,
tar, sha1sum) as the spec describes; a bundle made by the shell pipeline (tar | gzip |
openssl enc | split, and a manifest made with openssl) taken apart by ``package unbundle``;
tampered parts and manifests refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import qemu_img, run, write_at
from tests.package.helpers import MiB, make_disk, make_key, sha256_file

from imagewright.errors import InvalidArgumentError, UnsafeImageError
from imagewright.package.bundle import BundleOptions, bundle_image, unbundle, verify_bundle

pytestmark = pytest.mark.integration

SIZE = 24 * MiB
WRITES = [(0, 4096, 0x41), (3 * MiB + 7, 2 * MiB, 0x42), (SIZE - 512, 512, 0x43)]
PART = 1 * MiB


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundle")


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, tuple[Path, Path]]:
    return {
        "user": make_key(work, "user"),
        "cloud": make_key(work, "cloud"),
        "other": make_key(work, "other"),
    }


@pytest.fixture(scope="module")
def disk(work: Path) -> Path:
    """Patterned and random data (3 MiB that do not compress: several 1 MiB parts)."""
    path = make_disk(work / "disk.img", SIZE, WRITES)
    write_at(path, 9 * MiB, random.Random(11).randbytes(3 * MiB))
    return path


def options(keys: dict[str, tuple[Path, Path]], **extra: object) -> BundleOptions:
    return BundleOptions(
        user="1234-5678-9012",
        user_certificate=keys["user"][1],
        private_key=keys["user"][0],
        cloud_certificate=keys["cloud"][1],
        part_size=PART,
        **extra,  # type: ignore[arg-type]
    )


def element(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}[^>]*>([^<]*)</{tag}>", text)
    assert match is not None, tag
    return match.group(1)


def openssl_decrypt(hex_text: str, key: Path) -> str:
    out = run("openssl", "pkeyutl", "-decrypt", "-inkey", key, input=bytes.fromhex(hex_text)).stdout
    return out.decode()


def decrypt_by_hand(directory: Path, manifest: Path, key: Path) -> bytes:
    """cat parts | openssl enc -d -aes-128-cbc -K KEY -iv IV: the gzip stream."""
    text = manifest.read_text()
    aes_key = openssl_decrypt(element(text, "user_encrypted_key"), key)
    aes_iv = openssl_decrypt(element(text, "user_encrypted_iv"), key)
    assert re.fullmatch(r"[0-9a-f]{32}", aes_key) and re.fullmatch(r"[0-9a-f]{32}", aes_iv)
    parts = b"".join(
        (directory / name).read_bytes() for name in re.findall(r"<filename>([^<]+)</filename>", text)
    )
    return run("openssl", "enc", "-d", "-aes-128-cbc", "-K", aes_key, "-iv", aes_iv, input=parts).stdout


@pytest.mark.parametrize("source_format", ["raw", "qcow2"])
def test_a_bundle_is_taken_apart_by_hand_with_openssl_gunzip_and_tar(
    source_format: str, disk: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path, run_cli: object
) -> None:
    source = disk
    if source_format == "qcow2":
        source = tmp_path / "disk.qcow2"
        qemu_img("convert", "-f", "raw", "-O", "qcow2", disk, source)
    out = tmp_path / "bundle"
    out.mkdir()
    result: Result = run_cli(  # type: ignore[operator]
        ["package", "bundle", source, "-d", out, "-u", "1234-5678-9012", "-c", keys["user"][1],
         "-k", keys["user"][0], "--ec2cert", keys["cloud"][1], "--part-size", "1M",
         "-B", "ami=sda1,root=/dev/sda1", "--kernel", "aki-0123abcd", "--ramdisk", "ari-4567ef01", "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    manifest = out / "disk.img.manifest.xml"
    text = manifest.read_text()

    # Element order EC2 insists on; values as given.
    root = ET.fromstring(text)
    assert [e.tag for e in root] == ["version", "bundler", "machine_configuration", "image", "signature"]
    config, image = root.find("machine_configuration"), root.find("image")
    assert config is not None and image is not None
    assert [e.tag for e in config] == ["architecture", "block_device_mapping", "kernel_id", "ramdisk_id"]
    assert [(m.findtext("virtual"), m.findtext("device")) for m in config.iter("mapping")] == [
        ("ami", "sda1"), ("root", "/dev/sda1"),
    ]  # fmt: skip
    assert [e.tag for e in image] == [
        "name", "user", "type", "digest", "size", "bundled_size", "ec2_encrypted_key",
        "user_encrypted_key", "ec2_encrypted_iv", "user_encrypted_iv", "parts",
    ]  # fmt: skip
    assert (image.findtext("name"), image.findtext("user"), image.findtext("type")) == (
        "disk.img", "123456789012", "machine",
    )  # fmt: skip
    assert int(image.findtext("size") or 0) == SIZE

    # Parts: PREFIX.part.NN, each 1 MiB but the last, each its SHA-1, sizes summing up.
    names = [p.findtext("filename") for p in image.iter("part")]
    assert (
        names
        == [f"disk.img.part.{i:02}" for i in range(len(names))]
        == [p["filename"] for p in report["parts"]]
    )
    sizes = [(out / str(n)).stat().st_size for n in names]
    assert all(s == PART for s in sizes[:-1]) and 0 < sizes[-1] <= PART
    assert sum(sizes) == int(image.findtext("bundled_size") or 0)
    for part in image.iter("part"):
        sha1 = run("sha1sum", out / str(part.findtext("filename"))).stdout.split()[0].decode()
        assert sha1 == part.findtext("digest")
    assert sorted(p.name for p in out.iterdir()) == sorted([*map(str, names), manifest.name])

    # The signature: openssl verifies it over machine_configuration + image as written.
    signed = re.search(r"<machine_configuration>.*</machine_configuration>", text)
    signed_image = re.search(r"<image>.*</image>", text)
    assert signed is not None and signed_image is not None
    (tmp_path / "signed").write_bytes((signed.group(0) + signed_image.group(0)).encode())
    (tmp_path / "sig").write_bytes(bytes.fromhex(element(text, "signature")))
    pub = run("openssl", "x509", "-in", keys["user"][1], "-pubkey", "-noout").stdout
    (tmp_path / "pub.pem").write_bytes(pub)
    verify = ["openssl", "dgst", "-sha1", "-verify", tmp_path / "pub.pem", "-signature", tmp_path / "sig"]
    verified = run(*verify, tmp_path / "signed")
    assert verified.stdout.strip() == b"Verified OK"

    # Both certificates' holders can open the key and IV: the same 32 hex digits.
    for who, encrypted in (("user", "user_encrypted_key"), ("cloud", "ec2_encrypted_key")):
        assert re.fullmatch(r"[0-9a-f]{32}", openssl_decrypt(element(text, encrypted), keys[who][0]))
    assert openssl_decrypt(element(text, "user_encrypted_iv"), keys["user"][0]) == openssl_decrypt(
        element(text, "ec2_encrypted_iv"), keys["cloud"][0]
    )

    # openssl enc -d | gunzip | tar: one gzip member, whose tar stream is the manifest's digest,
    # holding one member named after the prefix: the source's raw disk, byte for byte.
    gz = decrypt_by_hand(out, manifest, keys["user"][0])
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    tar_stream = inflater.decompress(gz)
    assert inflater.eof and inflater.unused_data == b""
    assert hashlib.sha1(tar_stream).hexdigest() == element(text, "digest") == report["image_digest"]
    assert run("gzip", "-t", input=gz).returncode == 0
    listing = run("tar", "tvf", "-", input=tar_stream).stdout.decode().split()
    assert listing[2] == str(SIZE) and listing[-1] == "disk.img"
    extracted = tmp_path / "hand"
    extracted.mkdir()
    run("tar", "xf", "-", "-C", extracted, input=run("gunzip", input=gz).stdout)
    assert sha256_file(extracted / "disk.img") == sha256_file(disk)


def test_unbundle_and_verify_bundle_take_our_bundle_back(
    disk: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path, run_cli: object
) -> None:
    out = tmp_path / "b"
    out.mkdir()
    made = bundle_image(disk, out, options(keys))
    check: Result = run_cli(  # type: ignore[operator]
        ["package", "verify-bundle", made.manifest, "-c", keys["user"][1], "-k", keys["user"][0]]
    )
    assert check.exit_code == 0, check.output
    assert "signature:   valid" in check.stdout and "image:       valid" in check.stdout
    target = tmp_path / "restored"
    target.mkdir()
    result: Result = run_cli(["package", "unbundle", made.manifest, "-d", target, "-k", keys["user"][0]])  # type: ignore[operator]
    assert result.exit_code == 0, result.output
    assert sha256_file(target / "disk.img") == sha256_file(disk)
    # The cloud's key opens the bundle too (the ec2_* copies), given the signer's certificate.
    by_cloud = tmp_path / "cloud"
    by_cloud.mkdir()
    unbundle(made.manifest, by_cloud, keys["cloud"][0], certificate=keys["user"][1])
    assert sha256_file(by_cloud / "disk.img") == sha256_file(disk)


def shell_bundle(image: Path, directory: Path, keys: dict[str, tuple[Path, Path]], workdir: Path) -> Path:
    """The bundle as the spec's shell pipeline makes it, and a manifest made with openssl alone."""
    key, iv = "00112233445566778899aabbccddeeff", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    shell = (
        f"cd {image.parent} && tar cf - {image.name} | tee {workdir}/tar | gzip -c | "
        f"openssl enc -e -aes-128-cbc -K {key} -iv {iv} | "
        f"split -b 1048576 -d -a 2 - {directory}/{image.name}.part."
    )
    subprocess.run(["bash", "-c", shell], check=True)
    digest = run("sha1sum", workdir / "tar").stdout.split()[0].decode()

    def rsa_encrypt(text: str, cert: Path) -> str:
        """openssl rsautl -encrypt -pkcs -certin, as euca2ools calls it."""
        return run(
            "openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", cert, input=text.encode()
        ).stdout.hex()

    parts = sorted(directory.glob(f"{image.name}.part.*"))
    user, cloud = keys["user"][1], keys["cloud"][1]
    part_xml = "".join(
        f'<part index="{i}"><filename>{p.name}</filename><digest algorithm="SHA1">'
        f"{run('sha1sum', p).stdout.split()[0].decode()}</digest></part>"
        for i, p in enumerate(parts)
    )
    config = "<machine_configuration><architecture>x86_64</architecture></machine_configuration>"
    image_xml = (
        f"<image><name>{image.name}</name><user>123456789012</user><type>machine</type>"
        f'<digest algorithm="SHA1">{digest}</digest><size>{image.stat().st_size}</size>'
        f"<bundled_size>{sum(p.stat().st_size for p in parts)}</bundled_size>"
        f'<ec2_encrypted_key algorithm="AES-128-CBC">{rsa_encrypt(key, cloud)}</ec2_encrypted_key>'
        f'<user_encrypted_key algorithm="AES-128-CBC">{rsa_encrypt(key, user)}</user_encrypted_key>'
        f"<ec2_encrypted_iv>{rsa_encrypt(iv, cloud)}</ec2_encrypted_iv>"
        f"<user_encrypted_iv>{rsa_encrypt(iv, user)}</user_encrypted_iv>"
        f'<parts count="{len(parts)}">{part_xml}</parts></image>'
    )
    (workdir / "signed").write_text(config + image_xml)
    signature = run("openssl", "dgst", "-sha1", "-sign", keys["user"][0], workdir / "signed").stdout.hex()
    manifest = directory / f"{image.name}.manifest.xml"
    manifest.write_text(
        "<?xml version='1.0' encoding='UTF-8'?>\n<manifest><version>2007-10-10</version>"
        "<bundler><name>shell</name><version>1</version><release>0</release></bundler>"
        f"{config}{image_xml}<signature>{signature}</signature></manifest>"
    )
    return manifest


def test_our_unbundle_takes_apart_a_bundle_made_by_the_shell_pipeline(
    disk: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    bundle_dir, work = tmp_path / "shell", tmp_path / "work"
    bundle_dir.mkdir()
    work.mkdir()
    manifest = shell_bundle(disk, bundle_dir, keys, work)
    check = verify_bundle(manifest, certificate=keys["user"][1], private_key=keys["user"][0])
    assert check.ok, check.problems
    assert (check.signature, check.image_digest) == ("valid", "valid")
    target = tmp_path / "out"
    target.mkdir()
    result = unbundle(manifest, target, keys["user"][0])
    assert Path(result.image).name == "disk.img"
    assert sha256_file(target / "disk.img") == sha256_file(disk)


def tamper_flip(directory: Path, manifest: Path) -> None:
    part = directory / "disk.img.part.01"
    data = bytearray(part.read_bytes())
    data[1234] ^= 0x80
    part.write_bytes(bytes(data))


def tamper_swap(directory: Path, manifest: Path) -> None:
    a, b = directory / "disk.img.part.00", directory / "disk.img.part.01"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def tamper_manifest_size(directory: Path, manifest: Path) -> None:
    text = manifest.read_text()
    manifest.write_text(text.replace(f"<size>{SIZE}</size>", f"<size>{SIZE + 512}</size>"))


def tamper_manifest_arch(directory: Path, manifest: Path) -> None:
    text = manifest.read_text()
    manifest.write_text(
        text.replace("<architecture>x86_64</architecture>", "<architecture>i386</architecture>")
    )


def tamper_missing_part(directory: Path, manifest: Path) -> None:
    (directory / "disk.img.part.02").unlink()


def tamper_other_signer(directory: Path, manifest: Path) -> None:
    # Re-signed by a stranger's key: the user's certificate does not vouch for it.
    text = manifest.read_text()
    signed = (
        re.search(r"<machine_configuration>.*</machine_configuration>", text).group(0)  # type: ignore[union-attr]
        + re.search(r"<image>.*</image>", text).group(0)  # type: ignore[union-attr]
    )
    (directory / "signed").write_text(signed)
    other_key = directory.parent / "keys" / "other.key"
    signature = run("openssl", "dgst", "-sha1", "-sign", other_key, directory / "signed").stdout.hex()
    (directory / "signed").unlink()
    manifest.write_text(
        re.sub(r"<signature>[0-9a-f]+</signature>", f"<signature>{signature}</signature>", text)
    )


TAMPERING = {
    "flipped-byte": (tamper_flip, "does not match its SHA1 digest"),
    "swapped-parts": (tamper_swap, "does not match its SHA1 digest"),
    "edited-size": (tamper_manifest_size, "signature does not verify"),
    "edited-architecture": (tamper_manifest_arch, "signature does not verify"),
    "missing-part": (tamper_missing_part, "is missing"),
    "other-signer": (tamper_other_signer, "signature does not verify"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_tampered_bundle_is_refused_before_anything_is_written(
    case: str, disk: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path, run_cli: object
) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    shutil.copy(keys["other"][0], key_dir / "other.key")
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    made = bundle_image(disk, bundle_dir, options(keys))
    tamper, reason = TAMPERING[case]
    tamper(bundle_dir, Path(made.manifest))

    check = verify_bundle(made.manifest, certificate=keys["user"][1], private_key=keys["user"][0])
    assert not check.ok and any(reason in p for p in check.problems), check.problems
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(UnsafeImageError, match=reason):
        unbundle(made.manifest, target, keys["user"][0], certificate=keys["user"][1])
    assert list(target.iterdir()) == []
    cli: Result = run_cli(["package", "unbundle", made.manifest, "-d", target, "-k", keys["user"][0]])  # type: ignore[operator]
    assert cli.exit_code == 1 and len(cli.stderr.strip().splitlines()) == 1
    assert list(target.iterdir()) == []


def test_kernel_and_ramdisk_bundles_keep_their_bytes_and_type_and_link_to_a_machine_image(
    disk: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    kernel = tmp_path / "vmlinuz-6.1"
    kernel.write_bytes(bytes(range(256)) * 4001 + b"end")  # not a multiple of 512
    ramdisk = tmp_path / "initrd.img-6.1"
    ramdisk.write_bytes(b"\x1f\x8b" + bytes(300_000))
    out = tmp_path / "b"
    out.mkdir()
    eki = bundle_image(kernel, out, options(keys, kernel="true"))
    eri = bundle_image(ramdisk, out, options(keys, ramdisk="true"))
    emi = bundle_image(disk, out, options(keys, kernel="aki-00000001", ramdisk="ari-00000002"))
    for made, kind, tag in ((eki, "kernel", "kernel_id"), (eri, "ramdisk", "ramdisk_id")):
        text = Path(made.manifest).read_text()
        assert element(text, "type") == kind and element(text, tag) == "true"
        assert "<block_device_mapping>" not in text
    text = Path(emi.manifest).read_text()
    assert (element(text, "kernel_id"), element(text, "ramdisk_id"), element(text, "type")) == (
        "aki-00000001", "ari-00000002", "machine",
    )  # fmt: skip
    target = tmp_path / "restored"
    target.mkdir()
    unbundle(eki.manifest, target, keys["user"][0])
    assert (target / "vmlinuz-6.1").read_bytes() == kernel.read_bytes()
    assert int(element(Path(eki.manifest).read_text(), "size")) == kernel.stat().st_size
    with pytest.raises(InvalidArgumentError, match="takes no --ramdisk"):
        bundle_image(kernel, out, options(keys, kernel="true", ramdisk="ari-1"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda t: t.replace(
                "<manifest>", '<!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><manifest>'
            ),
            "DOCTYPE",
        ),
        (
            lambda t: re.sub(
                r"<filename>[^<]+</filename>", "<filename>../../etc/passwd</filename>", t, count=1
            ),
            "plain file name",
        ),
        (lambda t: t.replace('<parts count="', '<parts count="9'), "part count"),
        (lambda t: t.replace("<type>machine</type>", "<type>rootkit</type>"), "image type"),
    ],
)
def test_hostile_manifests_are_refused_in_one_sentence(
    change: object,
    reason: str,
    disk: Path,
    keys: dict[str, tuple[Path, Path]],
    tmp_path: Path,
    run_cli: object,
) -> None:
    made = bundle_image(disk, tmp_path, options(keys))
    manifest = Path(made.manifest)
    manifest.write_text(change(manifest.read_text()))  # type: ignore[operator]
    result: Result = run_cli(["package", "verify-bundle", manifest, "-c", keys["user"][1]])  # type: ignore[operator]
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert reason in line
