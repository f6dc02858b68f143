"""Property tests: mutated archives, OVAs and compressed streams made by the real tools, and
random bytes and XML, make the container readers raise nothing but ImagewrightError."""

from __future__ import annotations

import contextlib
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fixtures import tools
from tests.fixtures.hostile_containers import Entry, make_ova, ovf_descriptor, write_tar

from imagewright.binary import BytesSource
from imagewright.errors import ImagewrightError
from imagewright.formats.base import HEAD_SIZE, Limits
from imagewright.formats.containers import open_container, probe_container
from imagewright.formats.containers.manifest import manifest_entries, parse_certificate, parse_manifest
from imagewright.formats.containers.ovf import parse_descriptor
from imagewright.inspection import inspect_source

SETTINGS = settings(
    max_examples=int(os.environ.get("IMAGEWRIGHT_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Small limits keep each example fast while still hitting every limit path.
LIMITS = Limits(max_held_bytes=256 * 1024, max_scan_bytes=4 * 1024 * 1024, max_archive_members=64)


def _exercise(data: bytes) -> None:
    """Probe and open ``data``; touch every source it hands back. Only ImagewrightError may escape."""
    src = BytesSource(data)
    with contextlib.suppress(ImagewrightError):
        probe_container(src, data[:HEAD_SIZE])
    try:
        opened = open_container(src, LIMITS, name_hint="fuzz.ova")
    except ImagewrightError:
        return
    opened.to_dict()
    # The whole inspection (every member by its content) must not raise either.
    report = inspect_source(src, "fuzz.ova", limits=LIMITS)
    for reason in report.verdict.reasons:
        assert reason and "\n" not in reason
    for source in [opened.inner, *(m.source for m in opened.members)]:
        if source is None:
            continue
        try:
            source.pread(0, 4096)
            source.pread(max(0, source.size - 100), 200)
        except ImagewrightError:
            pass
    for problem in opened.problems:
        assert problem and problem == problem.strip() and not problem.endswith(".")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Archives and streams made by the real tools, to mutate."""
    work = tmp_path_factory.mktemp("seeds")
    tree = work / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("vm\n")
    os.symlink("/usr/share/zoneinfo/UTC", tree / "etc/localtime")
    (tree / ("d" * 120)).mkdir()
    (tree / ("d" * 120) / ("f" * 130)).write_bytes(os.urandom(3000))
    os.link(tree / "etc/hostname", tree / "etc/hostname2")
    tools.sparse_file(tree / "disk.raw", 1024 * 1024)
    tools.write_at(tree / "disk.raw", 300_000, b"data" * 100)
    out: dict[str, bytes] = {}
    for fmt in ("gnu", "posix", "ustar"):
        path = work / f"{fmt}.tar"
        names = ["etc", "disk.raw"] + (["d" * 120] if fmt != "ustar" else [])
        sparse = ["-S"] if fmt != "ustar" else []
        tools.run("tar", f"--format={fmt}", *sparse, "-C", tree, "-cf", path, *names)
        out[fmt] = path.read_bytes()
    python_tar = write_tar(
        work / "py.tar",
        [
            Entry("dev/null", type=tarfile.CHRTYPE),
            Entry("a", b"x" * 700),
            Entry("b", type=tarfile.SYMTYPE, linkname="a"),
        ],
        tarfile.PAX_FORMAT,
    )
    out["python-pax"] = python_tar.read_bytes()
    ova = make_ova(work)
    out["ova"] = ova.read_bytes()
    raw = work / "small.raw"
    raw.write_bytes(os.urandom(2048) + bytes(60_000) + b"tail" * 1000)
    for program, args in (("gzip", ["-c"]), ("xz", ["-T1", "-c"]), ("bzip2", ["-c"]), ("zstd", ["-q", "-c"])):
        out[program] = tools.run(program, *args, raw).stdout
        out[f"{program}-tar"] = tools.run(program, *args, work / "gnu.tar").stdout
    out["gzip-ova"] = tools.run("gzip", "-c", ova).stdout
    return out


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None, window: int) -> bytes:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % min(len(buf), window)] = value
    if cut is not None:
        buf = buf[: cut % (len(buf) + 1)]
    return bytes(buf)


_EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8)
_CUT = st.one_of(st.none(), st.integers(0, 1 << 20))


@pytest.mark.parametrize("seed", ["gnu", "posix", "ustar", "python-pax", "ova"])
@SETTINGS
@given(edits=_EDITS, cut=_CUT)
def test_mutated_tar_headers_raise_only_imagewright_errors(
    seeds: dict[str, bytes], seed: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    # Mutate the first 8 KiB: headers, pax records, GNU long names, sparse maps, the OVF.
    _exercise(_mutate(seeds[seed], edits, cut, 8192))


@pytest.mark.parametrize(
    "seed", ["gzip", "xz", "bzip2", "zstd", "gzip-tar", "xz-tar", "zstd-tar", "bzip2-tar", "gzip-ova"]
)
@SETTINGS
@given(edits=_EDITS, cut=_CUT, window=st.sampled_from([32, 512, 1 << 20]))
def test_mutated_compressed_streams_raise_only_imagewright_errors(
    seeds: dict[str, bytes], seed: str, edits: list[tuple[int, int]], cut: int | None, window: int
) -> None:
    # Small windows hit the headers (gzip flags, xz/zstd frame headers); the large one the data
    # and the xz index / zstd block headers.
    data = seeds[seed]
    if window == 1 << 20 and seed.startswith("xz"):
        # xz keeps its index and footer at the end: mutate there too.
        edits = [(len(data) - 1 - (p % 64), v) for p, v in edits]
    _exercise(_mutate(data, edits, cut, window))


@SETTINGS
@given(
    magic=st.sampled_from(
        [b"\x1f\x8b\x08", b"\xfd7zXZ\x00", b"BZh9\x31\x41\x59\x26\x53\x59", b"\x28\xb5\x2f\xfd", b""]
    ),
    body=st.binary(min_size=0, max_size=4096),
)
def test_random_bytes_after_a_magic_raise_only_imagewright_errors(magic: bytes, body: bytes) -> None:
    _exercise(magic + body)


@SETTINGS
@given(
    blocks=st.lists(st.binary(min_size=512, max_size=512), min_size=1, max_size=6), fix_checksum=st.booleans()
)
def test_random_tar_headers_raise_only_imagewright_errors(blocks: list[bytes], fix_checksum: bool) -> None:
    fixed = []
    for block in blocks:
        buf = bytearray(block)
        buf[257:265] = b"ustar\x0000"
        if fix_checksum:
            buf[148:156] = b" " * 8
            buf[148:156] = b"%06o\x00 " % sum(buf)
        fixed.append(bytes(buf))
    _exercise(b"".join(fixed) + bytes(1024))


_XML_TOKENS = st.sampled_from(
    [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">',
        "</Envelope>",
        "<References>",
        "</References>",
        '<File ovf:id="f" ovf:href="',
        '<File ovf:id="f" ovf:size="',
        '" ovf:chunkSize="9"/>',
        '"/>',
        "<DiskSection><Info>x</Info>",
        '<Disk ovf:diskId="d" ovf:fileRef="f" ovf:capacity="',
        '" ovf:capacityAllocationUnits="byte * 2^',
        "</DiskSection>",
        "<VirtualSystem ovf:id='v'><Name>",
        "</Name></VirtualSystem>",
        "<VirtualHardwareSection><Item><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>",
        "</rasd:VirtualQuantity></Item></VirtualHardwareSection>",
        "99999999999999999999999999999",
        "../x",
        "http://a/b",
        "${size}",
        "<!DOCTYPE x [",
        '<!ENTITY e "a">',
        "]>",
        "&e;",
        "&amp;",
        "<![CDATA[",
        "]]>",
        "<!-- c -->",
    ]
)


@SETTINGS
@given(tokens=st.lists(st.one_of(_XML_TOKENS, st.text(max_size=20)), max_size=30))
def test_random_ovf_fragments_raise_only_image_format_errors(tokens: list[str]) -> None:
    text = "".join(tokens)
    for data in (text.encode("utf-8", "surrogatepass"), text.encode("utf-16", "surrogatepass")):
        with contextlib.suppress(ImagewrightError):
            parse_descriptor(data, 1 << 44)


@SETTINGS
@given(edits=_EDITS)
def test_mutated_real_descriptor_raises_only_image_format_errors(edits: list[tuple[int, int]]) -> None:
    data = ovf_descriptor().encode()
    with contextlib.suppress(ImagewrightError):
        parse_descriptor(_mutate(data, edits, None, len(data)), 1 << 44)


@SETTINGS
@given(lines=st.lists(st.text(max_size=80), max_size=20), raw=st.binary(max_size=300))
def test_manifest_and_certificate_parsers_never_raise_anything_else(lines: list[str], raw: bytes) -> None:
    for data in ("\n".join(lines).encode("utf-8", "surrogatepass"), raw):
        entries, problems = parse_manifest(data)
        assert all(p and not p.endswith(".") for p in problems)
        parse_certificate(data)
        try:
            assert manifest_entries(data) == entries
        except ImagewrightError:
            assert problems


def test_seeds_are_what_they_claim(seeds: dict[str, bytes], tmp_path: Path) -> None:
    """The unmutated seeds open cleanly, so the mutations start from valid input."""
    for name in ("gnu", "posix", "ova", "gzip-tar", "xz-tar", "zstd-tar", "bzip2-tar", "gzip-ova"):
        opened = open_container(BytesSource(seeds[name]), Limits())
        assert opened.members, name
        assert not any("truncated" in p or "checksum" in p for p in opened.problems), (name, opened.problems)


_PAX_KEYS = st.sampled_from(
    [
        "path",
        "linkpath",
        "size",
        "uid",
        "mtime",
        "GNU.sparse.major",
        "GNU.sparse.minor",
        "GNU.sparse.name",
        "GNU.sparse.realsize",
        "GNU.sparse.size",
        "GNU.sparse.map",
        "GNU.sparse.offset",
        "GNU.sparse.numbytes",
        "GNU.sparse.numblocks",
    ]
)


@SETTINGS
@given(
    records=st.dictionaries(_PAX_KEYS, st.text(alphabet="0123456789,.-x/\x00²", max_size=30), max_size=8),
    data=st.binary(max_size=2048),
)
def test_random_pax_records_raise_only_imagewright_errors(records: dict[str, str], data: bytes) -> None:
    """pax records steer names, sizes and the three pax sparse encodings (and the 1.0 map
    read from the member data): random values through tarfile's own writer."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("disk.raw")
        info.size = len(data)
        info.pax_headers = records
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("after.raw")
        tar.addfile(info)
    _exercise(buf.getvalue())
    _exercise(tools_free_gzip(buf.getvalue()))


def tools_free_gzip(data: bytes) -> bytes:
    """gzip in-process (the CLI would be too slow per example); the reader is the same."""
    import gzip

    return gzip.compress(data, compresslevel=1)
