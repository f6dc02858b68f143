"""Hostile OVAs: each refused by ``package verify`` (exit 1, the reason named) and by
``convert`` (one sentence, nothing written, nothing left behind). Packages are built from a
good one with Python's tarfile, changed one way each."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.fixtures.tools import qemu_img
from tests.package.helpers import MiB, make_disk, make_key, read_members, repack

from imagewright.package.ova import OvaOptions, package_ova
from imagewright.package.ova_verify import verify_ova
from imagewright.package.ovf_descriptor import DiskFacts, MachineSpec, build_descriptor
from imagewright.package.signing import load_signer

pytestmark = pytest.mark.integration

Members = list[tuple[str, bytes]]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    work = tmp_path_factory.mktemp("keys")
    return {"signer": make_key(work, "signer"), "intruder": make_key(work, "intruder")}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, tuple[Path, Path]]) -> Members:
    """The members of a good signed OVA: vm.ovf, vm.mf, vm.cert, vm-disk1.vmdk."""
    work = tmp_path_factory.mktemp("good")
    disk = make_disk(work / "disk.raw", 8 * MiB, [(0, 4096, 0x31), (3 * MiB, 65536, 0x32)])
    ova = work / "vm.ova"
    package_ova(disk, ova, OvaOptions(MachineSpec(name="vm"), signer=load_signer(*keys["signer"])))
    return read_members(ova)


def remanifest(
    members: Members, keys: dict[str, tuple[Path, Path]] | None = None, signer: str = "signer"
) -> Members:
    """New .mf lines for the members as they now are, re-signed (a tamperer who holds a key)."""
    files = [(n, d) for n, d in members if not n.endswith((".mf", ".cert"))]
    mf = "".join(f"SHA256({n})= {hashlib.sha256(d).hexdigest()}\n" for n, d in files).encode()
    out = [(n, mf if n.endswith(".mf") else d) for n, d in members]
    if keys is not None:
        key, cert = keys[signer]
        signature = load_signer(key, cert).sign(mf, "SHA256").hex()
        cert_member = f"SHA256(vm.mf)= {signature}\n".encode() + cert.read_bytes()
        out = [(n, cert_member if n.endswith(".cert") else d) for n, d in out]
    return out


def replace(members: Members, name: str, data: bytes) -> Members:
    return [(n, data if n == name else d) for n, d in members]


def descriptor_text(members: Members) -> str:
    return dict(members)["vm.ovf"].decode()


def with_descriptor(members: Members, text: str, keys: dict[str, tuple[Path, Path]]) -> Members:
    return remanifest(replace(members, "vm.ovf", text.encode()), keys)


def dtd(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    text = descriptor_text(members).replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE Envelope [<!ENTITY leak SYSTEM "file:///etc/passwd">]>',
    )
    return with_descriptor(members, text.replace("<Name>vm</Name>", "<Name>&leak;</Name>"), keys)


def entities(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    bomb = '<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    text = (
        descriptor_text(members)
        .replace("?>\n", f"?>\n{bomb}\n", 1)
        .replace("<Name>vm</Name>", "<Name>&b;</Name>")
    )
    return with_descriptor(members, text, keys)


def xinclude(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    include = '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd" parse="text"/>'
    text = descriptor_text(members).replace("<Name>vm</Name>", f"<Name>vm</Name>{include}")
    return with_descriptor(members, text, keys)


def href(target: str) -> Callable[[Members, dict[str, tuple[Path, Path]], Path], Members]:
    def change(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
        text = descriptor_text(members).replace('ovf:href="vm-disk1.vmdk"', f'ovf:href="{target}"')
        return with_descriptor(members, text, keys)

    return change


def absent_in_manifest(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    mf = dict(members)["vm.mf"] + b"SHA256(ghost.vmdk)= " + b"0" * 64 + b"\n"
    signature = load_signer(*keys["signer"]).sign(mf, "SHA256").hex()
    cert = f"SHA256(vm.mf)= {signature}\n".encode() + keys["signer"][1].read_bytes()
    return replace(replace(members, "vm.mf", mf), "vm.cert", cert)


def duplicate(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    disk = dict(members)["vm-disk1.vmdk"]
    return [*members, ("vm-disk1.vmdk", disk[:512] + bytes(len(disk) - 512))]


def other_key(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    # Signed by the intruder's key, but carrying the signer's certificate.
    mf = dict(members)["vm.mf"]
    signature = load_signer(*keys["intruder"]).sign(mf, "SHA256").hex()
    return replace(
        members, "vm.cert", f"SHA256(vm.mf)= {signature}\n".encode() + keys["signer"][1].read_bytes()
    )


def backing_file(members: Members, keys: dict[str, tuple[Path, Path]], work: Path) -> Members:
    qcow2 = work / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", qcow2, str(8 * MiB))
    data = qcow2.read_bytes()
    text = build_descriptor(MachineSpec(name="vm"), DiskFacts("vm-disk1.vmdk", len(data), 8 * MiB, 0))
    changed = replace(replace(members, "vm-disk1.vmdk", data), "vm.ovf", text.encode())
    return remanifest(changed, keys)


def flipped_byte(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    disk = bytearray(dict(members)["vm-disk1.vmdk"])
    disk[70_000] ^= 0x01
    return replace(members, "vm-disk1.vmdk", bytes(disk))


def disk_first(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    return [members[3], *members[:3]]


def unlisted_member(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    return [*members, ("README.txt", b"not in the manifest\n")]


def wrong_capacity(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    text = descriptor_text(members).replace(f'ovf:capacity="{8 * MiB}"', f'ovf:capacity="{16 * MiB}"')
    return with_descriptor(members, text, keys)


def edited_manifest(members: Members, keys: dict[str, tuple[Path, Path]], _: Path) -> Members:
    # Disk and manifest changed together, the signature left as it was.
    changed = flipped_byte(members, keys, _)
    return replace(remanifest(changed), "vm.cert", dict(members)["vm.cert"])


CASES: dict[str, tuple[Callable[[Members, dict[str, tuple[Path, Path]], Path], Members], str]] = {
    "dtd": (dtd, "DOCTYPE or ENTITY declaration"),
    "entities": (entities, "DOCTYPE or ENTITY declaration"),
    "xinclude": (xinclude, "XInclude"),
    "href-parent": (href("../../etc/passwd"), "a '..' component"),
    "href-absolute": (href("/etc/passwd"), "an absolute path"),
    "href-url": (href("http://example.com/vm-disk1.vmdk"), "a URL"),
    "manifest-absent-file": (
        absent_in_manifest,
        "the manifest lists 'ghost.vmdk', which is not in the archive",
    ),
    "duplicate-member": (duplicate, "appears twice"),
    "signature-other-key": (other_key, "signature does not verify"),
    "qcow2-backing-file": (backing_file, "backing file"),
    "flipped-byte": (flipped_byte, "SHA256 digest of 'vm-disk1.vmdk' does not match the manifest"),
    "edited-manifest": (edited_manifest, "signature does not verify"),
    "disk-first": (disk_first, "is not the first member"),
    "unlisted-member": (unlisted_member, "'README.txt' has no manifest entry"),
    "wrong-capacity": (wrong_capacity, "has a capacity of 16777216 bytes in the descriptor"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_ova_is_refused_by_verify_and_by_convert(
    case: str, good: Members, keys: dict[str, tuple[Path, Path]], tmp_path: Path, run_cli: object
) -> None:
    change, reason = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    ova = repack(tmp_path / "vm.ova", change(list(good), keys, work))

    verification = verify_ova(ova)
    assert not verification.ok
    assert any(reason in problem for problem in verification.problems), verification.problems

    verify: Result = run_cli(["package", "verify", ova])  # type: ignore[operator]
    assert verify.exit_code == 1
    assert verify.stdout.strip().splitlines()[-1] == "verdict:     refused"

    out = tmp_path / "out" / "disk.qcow2"
    out.parent.mkdir()
    convert: Result = run_cli(["convert", ova, out])  # type: ignore[operator]
    assert convert.exit_code == 1
    (line,) = convert.stderr.strip().splitlines()
    assert line.startswith("imagewright: error: ")
    assert list(out.parent.iterdir()) == []


def test_the_unchanged_package_passes_every_check(good: Members, tmp_path: Path, run_cli: object) -> None:
    """The control: the same repacking without a change is a good package."""
    ova = repack(tmp_path / "vm.ova", list(good))
    assert verify_ova(ova).ok
    out = tmp_path / "disk.qcow2"
    result: Result = run_cli(["convert", ova, out])  # type: ignore[operator]
    assert result.exit_code == 0, result.output
