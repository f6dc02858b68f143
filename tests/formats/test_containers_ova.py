"""OVAs made as tools in the wild make them (``tar -cf`` of a hand-written OVF, its SHA256
manifest from ``sha256sum`` and a streamOptimized VMDK from qemu-img), plain and gzipped:
the descriptor summary, the package checks, the manifest and certificate."""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures import tools
from tests.fixtures.hostile_containers import (
    BILLION_LAUGHS,
    STREAM_OPTIMIZED,
    Entry,
    make_ova,
    ovf_descriptor,
    stream_optimized_vmdk,
    write_tar,
)

from imagewright.binary import FileSource, PrefixSource, read_exact
from imagewright.errors import ImageFormatError
from imagewright.formats.base import HEAD_SIZE, Limits
from imagewright.formats.containers import (
    OpenedContainer,
    manifest_entries,
    open_container,
    parse_manifest,
    probe_container,
)
from imagewright.formats.containers.manifest import parse_certificate
from imagewright.formats.containers.ovf import allocation_multiplier, href_problem, parse_descriptor
from imagewright.inspection import inspect_image

MiB = 1024 * 1024
_OPEN: list[FileSource] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def open_path(path: Path, limits: Limits | None = None) -> OpenedContainer:
    src = FileSource(path)
    _OPEN.append(src)
    return open_container(src, limits or Limits(), name_hint=path.name)


def test_ova_made_with_tar_is_summarised(tmp_path: Path) -> None:
    ova = make_ova(tmp_path)
    with FileSource(ova) as src:
        assert probe_container(src, src.pread(0, HEAD_SIZE)) == "ova"
    opened = open_path(ova)
    assert (opened.format, opened.kind, opened.layers) == ("ova", "ova", ["ova"])
    assert opened.problems == [] and opened.notes == [] and not opened.partial
    listing = tools.run("tar", "-tf", ova).stdout.decode().split()
    assert [m.name for m in opened.members] == listing == ["appliance.ovf", "appliance.mf", "disk1.vmdk"]
    archive = opened.details.archive
    assert archive is not None and archive.format == "ustar"

    ova_details = opened.details.ova
    assert ova_details is not None and ova_details.descriptor is not None
    descriptor = ova_details.descriptor
    vmdk = tmp_path / "appliance.ova.d" / "disk1.vmdk"
    assert descriptor.version == "1.x"
    [ref] = descriptor.references
    assert (ref.id, ref.href, ref.size) == ("file1", "disk1.vmdk", vmdk.stat().st_size)
    [disk] = descriptor.disks
    assert (disk.disk_id, disk.file_ref, disk.capacity, disk.format) == (
        "vmdisk1",
        "file1",
        16 * MiB,
        STREAM_OPTIMIZED,
    )
    assert descriptor.networks == ["VM Network"]
    [system] = descriptor.virtual_systems
    assert (system.id, system.name, system.os_id, system.os_description, system.os_type) == (
        "vm",
        "test-vm",
        101,
        "Debian 12 64-bit",
        "debian12_64Guest",
    )
    hardware = system.hardware
    assert (hardware.cpus, hardware.memory_mib, hardware.system_types) == (2, 1024, ["vmx-07", "vmx-13"])
    assert [(c.kind, c.subtype) for c in hardware.controllers] == [("SCSI", "lsilogic")]
    assert [(n.subtype, n.connection) for n in hardware.nics] == [("E1000", "VM Network")]
    assert hardware.disks == ["ovf:/disk/vmdisk1"]

    assert ova_details.manifest is not None
    assert (ova_details.manifest.entries, ova_details.manifest.algorithms) == (2, ["SHA256"])
    assert opened.details.ova is not None and opened.details.ova.disk_files == ["disk1.vmdk"]
    member = opened.member("disk1.vmdk")
    assert member is not None and member.source is not None
    assert member.source.pread(0, 4) == b"KDMV"
    # The helper for the package stage: the manifest digests are those of the members.
    mf = opened.member("appliance.mf")
    assert mf is not None and mf.source is not None
    for entry in manifest_entries(read_exact(mf.source, 0, mf.size, "manifest")):
        target = opened.member(entry.name)
        assert target is not None and target.source is not None
        digest = hashlib.sha256(read_exact(target.source, 0, target.size, "member")).hexdigest()
        assert digest == entry.digest
    assert opened.to_dict()["details"]["ova"]["descriptor"]["disks"][0]["capacity"] == 16 * MiB


def test_gzipped_ova_is_judged_from_the_stream(tmp_path: Path) -> None:
    ova = make_ova(tmp_path)
    gz = tmp_path / "appliance.ova.gz"
    gz.write_bytes(tools.run("gzip", "-c", ova).stdout)
    opened = open_path(gz)
    assert (opened.format, opened.kind, opened.layers) == ("gzip", "ova", ["gzip", "ova"])
    assert opened.problems == []
    assert opened.details.ova is not None and opened.details.ova.descriptor is not None
    assert opened.details.ova is not None and opened.details.ova.disk_files == ["disk1.vmdk"]
    member = opened.member("disk1.vmdk")
    assert member is not None and isinstance(member.source, PrefixSource)
    vmdk = (tmp_path / "appliance.ova.d" / "disk1.vmdk").read_bytes()
    assert member.source.size == len(vmdk)
    assert member.source.pread(0, member.source.prefix_length) == vmdk[: member.source.prefix_length]


def test_member_order_deviations_are_notes(tmp_path: Path) -> None:
    ova = make_ova(
        tmp_path,
        disks=("disk1.vmdk", "disk2.vmdk"),
        order=("disk2.vmdk", "appliance.ovf", "disk1.vmdk", "appliance.mf"),
    )
    opened = open_path(ova)
    assert opened.problems == []
    assert any("not the first member" in note for note in opened.notes)
    assert any("not in the order" in note for note in opened.notes)


def test_declared_size_mismatch_and_capacity_over_the_limit(tmp_path: Path) -> None:
    ovf = ovf_descriptor(
        files=[("file1", "disk1.vmdk", 12345)],
        disks=[("vmdisk1", "file1", "32", "byte * 2^40")],
    )
    opened = open_path(make_ova(tmp_path, ovf=ovf))
    text = " | ".join(opened.problems)
    assert "but the OVF descriptor says 12345" in text
    assert "capacity of 32 TiB, more than the limit" in text


def test_manifest_name_not_in_archive_is_a_note_and_malformed_line_a_problem(tmp_path: Path) -> None:
    ova = make_ova(tmp_path, with_manifest=False)
    digest = hashlib.sha256(b"x").hexdigest()
    with tarfile.open(ova, "a", format=tarfile.USTAR_FORMAT) as tar:
        data = f"SHA256(ghost.vmdk)= {digest}\r\nSHA256 (disk1.vmdk) = {digest}\r\nnot a line\r\n".encode()
        info = tarfile.TarInfo("appliance.mf")
        info.size = len(data)
        import io

        tar.addfile(info, io.BytesIO(data))
    opened = open_path(ova)
    assert any("ghost.vmdk" in note for note in opened.notes)
    assert any("line 3 is not of the form" in problem for problem in opened.problems)


def test_certificate_made_with_openssl_is_reported(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    tools.run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-subj",
        "/CN=imagewright test",
        "-days",
        "1",
    )
    mf = tmp_path / "appliance.mf"
    mf.write_text("SHA256(appliance.ovf)= " + "ab" * 32 + "\n")
    signed = tools.run("openssl", "dgst", "-sha256", "-sign", key, "-hex", mf).stdout.decode()
    # openssl writes "RSA-SHA2-256(file)= hex"; ovftool writes "SHA256(file)= hex".
    line = re.sub(r"^[A-Z0-9-]+\(", "SHA256(", signed.strip()).replace(str(mf), "appliance.mf")
    info, problems = parse_certificate((line + "\n" + cert.read_text()).encode())
    assert problems == []
    assert (info.signature_algorithm, info.signed_file, info.signature_bits, info.certificates) == (
        "SHA256",
        "appliance.mf",
        2048,
        1,
    )
    info, problems = parse_certificate(cert.read_bytes())
    assert problems == ["the certificate file has no signature line"]


def test_manifest_parsing_is_tolerant_of_writers_and_strict_on_digests() -> None:
    sha1 = hashlib.sha1(b"a").hexdigest()
    text = f"SHA1(a.ovf)= {sha1}\nSHA256 (b.vmdk) = {'A' * 64}\r\n\nMD5(c)={'0' * 32}\nSIZE(b.vmdk)= 42\n"
    entries, problems = parse_manifest(text.encode())
    assert problems == []
    assert [(e.algorithm, e.name, e.digest) for e in entries] == [
        ("SHA1", "a.ovf", sha1),
        ("SHA256", "b.vmdk", "a" * 64),
        ("MD5", "c", "0" * 32),
        ("SIZE", "b.vmdk", "42"),
    ]
    entries, problems = parse_manifest(b"SHA256(x)= abc\nSHA384(y)= " + b"0" * 96 + b"\n")
    assert entries == [] and len(problems) == 2
    with pytest.raises(ImageFormatError, match="not 64 hex digits"):
        manifest_entries(b"SHA256(x)= abc\n")


def test_descriptor_namespaces_and_units() -> None:
    v2 = ovf_descriptor().replace("ovf/envelope/1", "ovf/envelope/2")
    assert parse_descriptor(v2.encode(), 1 << 44).descriptor.version == "2.x"
    v09 = ovf_descriptor().replace(
        "http://schemas.dmtf.org/ovf/envelope/1", "http://www.vmware.com/schema/ovf/1/envelope"
    )
    assert parse_descriptor(v09.encode(), 1 << 44).descriptor.version == "0.9"
    assert allocation_multiplier("byte * 2^30") == 1 << 30
    assert allocation_multiplier("byte*10^9") == 10**9
    assert allocation_multiplier("MegaBytes") == 1 << 20
    assert allocation_multiplier(None) == 1
    assert allocation_multiplier("byte * 2^99999") is None
    assert allocation_multiplier("parsecs") is None


def test_href_rules() -> None:
    assert href_problem("disk1.vmdk") is None
    assert href_problem("../disk") == "a '..' component"
    assert href_problem("sub/disk") == "a directory separator"
    assert href_problem("C:\\disk") == "an absolute path"
    assert href_problem("file:disk") == "a URL"
    assert href_problem("https://example.com/d.vmdk") == "a URL"


def test_doctype_hidden_by_an_encoding_is_still_refused() -> None:
    text = ovf_descriptor(prologue=BILLION_LAUGHS).replace('encoding="UTF-8"', 'encoding="UTF-16"')
    for data in (text.encode("utf-16"), text.encode("utf-16-be"), text.encode("utf-8")):
        with pytest.raises(ImageFormatError):
            parse_descriptor(data, 1 << 44)
    with pytest.raises(ImageFormatError, match="DOCTYPE or ENTITY"):
        parse_descriptor(text.encode("utf-16"), 1 << 44)


def test_xml_errors_and_huge_trees_are_one_sentence() -> None:
    with pytest.raises(ImageFormatError, match=r"not well-formed XML \(mismatched tag"):
        parse_descriptor(b"<Envelope><References></Envelope>", 1 << 44)
    flood = b"<Envelope>" + b"<a/>" * 200_000 + b"</Envelope>"
    with pytest.raises(ImageFormatError, match="more than 100000 elements"):
        parse_descriptor(flood, 1 << 44)
    deep = b"<a>" * 100 + b"</a>" * 100
    with pytest.raises(ImageFormatError, match="nests elements"):
        parse_descriptor(deep, 1 << 44)


@pytest.mark.parametrize(
    ("declared", "codec"), [("UTF-16", "utf-16"), ("ISO-8859-1", "latin-1"), ("UTF-8", "utf-8-sig")]
)
def test_descriptors_in_other_encodings_are_read(declared: str, codec: str) -> None:
    text = (
        ovf_descriptor()
        .replace('encoding="UTF-8"', f'encoding="{declared}"')
        .replace(">test-vm<", ">tëst-vm<")
    )
    reading = parse_descriptor(text.encode(codec), 1 << 44)
    assert reading.descriptor.virtual_systems[0].name == "tëst-vm"


def test_unicode_digits_in_numbers_are_problems_not_crashes() -> None:
    text = ovf_descriptor(disks=[("vmdisk1", "file1", "1²", "byte * 2^٣")])
    reading = parse_descriptor(text.encode(), 1 << 44)
    assert reading.descriptor.disks[0].capacity is None
    assert any("unknown units" in problem for problem in reading.problems)


def _chunked_ova(tmp_path: Path, chunk: int, cut: list[int] | None = None) -> Path:
    """An OVA whose disk (a real streamOptimized VMDK) is stored in ``chunk``-byte pieces
    (DSP0243 5.4), cut at ``cut`` instead when given (chunks of the wrong size)."""
    disk = stream_optimized_vmdk(tmp_path / "disk1.vmdk").read_bytes()
    ovf = ovf_descriptor(files=[("file1", "disk1.vmdk", len(disk))]).replace(
        'ovf:href="disk1.vmdk"', f'ovf:href="disk1.vmdk" ovf:chunkSize="{chunk}"'
    )
    bounds = cut if cut is not None else list(range(0, len(disk), chunk))
    pieces = [disk[start:end] for start, end in zip(bounds, [*bounds[1:], len(disk)], strict=True)]
    entries = [Entry("appliance.ovf", ovf.encode())]
    entries += [Entry(f"disk1.vmdk.{index:09d}", piece) for index, piece in enumerate(pieces)]
    return write_tar(tmp_path / "chunked.ova", entries, tarfile.USTAR_FORMAT)


def test_a_chunked_disk_is_inspected_as_its_joined_chunks(tmp_path: Path) -> None:
    ova = _chunked_ova(tmp_path, 64 * 1024)
    opened = open_path(ova)
    assert opened.problems == []
    assert opened.details.ova is not None
    chunks = opened.details.ova.chunks["disk1.vmdk"]
    assert chunks == [f"disk1.vmdk.{i:09d}" for i in range(len(chunks))] and len(chunks) > 1
    report = inspect_image(ova)
    assert report.verdict.safe, report.verdict.reasons
    assert report.container is not None
    joined = report.container.image_of(f"disk1.vmdk (joined from {len(chunks)} chunks)")
    assert joined is not None and joined.format == "vmdk" and joined.subformat == "streamOptimized"
    assert joined.virtual_size == 16 * MiB
    # The chunks themselves are not inspected one by one (a middle chunk is no image).
    assert all(not image.name.startswith("disk1.vmdk.0") for image in report.container.images)


def test_chunks_of_the_wrong_size_are_refused(tmp_path: Path) -> None:
    ova = _chunked_ova(tmp_path, 64 * 1024, cut=[0, 1000, 70000])
    opened = open_path(ova)
    assert any("are not 65536 bytes each" in problem for problem in opened.problems), opened.problems
