"""EC2 image bundles as euca2ools writes them, in one pass; unbundled and verified in two.

Bundling (spec digest section 3.1; euca2ools ``bundle/pipes/core.py``, ``fittings.py``)::

    image bytes -> tar (one member, named PREFIX) -> SHA-1 of the tar stream (<digest>)
                -> gzip -> AES-128-CBC (key and IV: 128 random bits each, as 32 hex digits;
                   the raw key is what those digits encode, PKCS#7 padding, no salt)
                -> parts of --part-size bytes: PREFIX.part.00, .01 ... (each its SHA-1)
    then PREFIX.manifest.xml (``bundle_manifest``): the hex key and IV RSA-encrypted for the
    cloud's and the user's certificates, signed with the user's key.

The gzip stream is made of the grains' shared deflate blocks (``deflate``: parallel,
sync-flushed, one gzip member) plus one block for the tar header and one for the tar's
padding; nothing is compressed twice when a bundle is made beside an OVA or a raw.gz. A
machine image is the raw guest (any source format, streamed by qemu-img); a kernel or
ramdisk (``--kernel true`` / ``--ramdisk true``) is the file itself, byte for byte.

Parts are written under temporary names and put in place, the manifest last, only when the
whole bundle is complete.

Unbundling reads every part twice, and writes nothing until the first read passed: pass 1
checks the manifest's signature and every part's size and SHA-1; pass 2 decrypts, inflates
(bounded by the size the manifest states), checks the tar member and the SHA-1 of the tar
stream, and only then puts the image in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from imagewright import __version__
from imagewright.errors import ImageFormatError, ImageIOError, InvalidArgumentError, UnsafeImageError
from imagewright.files import AtomicOutput, ScratchFiles, io_error
from imagewright.formats.base import Limits
from imagewright.formats.containers.tar import parse_header
from imagewright.formats.containers.tar_header import TarHeaderError
from imagewright.ops.convert.output import BackgroundHashes, OutputFile, stream_file
from imagewright.package.bundle_manifest import (
    ARCHITECTURES,
    BundleManifest,
    BundlePart,
    ReadManifest,
    check_plain_name,
    check_token,
    read_manifest,
)
from imagewright.package.deflate import DEFAULT_LEVEL, GzipMember, deflate_block
from imagewright.package.grains import GrainBatch, GrainStream
from imagewright.package.passes import GatherBuffer, Progress, SequentialFile, read_source, run_pass
from imagewright.package.signing import (
    SignatureError,
    decrypt_with,
    encrypt_for,
    load_certificate_file,
    load_private_key,
    sign_with,
    verify_with,
)
from imagewright.package.tar_writer import BLOCK, end_of_archive, padding, ustar_header

DEFAULT_PART_SIZE = 10 * 1024 * 1024
#: EC2 refuses S3-backed images larger than this (euca2ools warns).
EC2_BUNDLE_SIZE_LIMIT = 10 << 30
_READ = 4 << 20
_ZERO = bytes(64 * 1024)
#: Bytes of the gzip stream gathered per encryption call.
_ENCRYPT_BLOCK = 1 << 20
#: AES's block: CBC encrypts whole blocks, PKCS#7 pads to one.
_AES_BLOCK = 16
#: Items (a data run of at most 1 MiB, or a zero run's length) waiting for the tar's SHA-1.
_TAR_DIGEST_QUEUE = 32


@dataclass(frozen=True)
class BundleOptions:
    user: str
    user_certificate: Path
    private_key: Path
    cloud_certificate: Path
    architecture: str = "x86_64"
    #: "aki-…" links a kernel; "true" makes this image the kernel.
    kernel: str | None = None
    ramdisk: str | None = None
    block_device_mappings: tuple[tuple[str, str], ...] = ()
    product_codes: tuple[str, ...] = ()
    part_size: int = DEFAULT_PART_SIZE
    prefix: str | None = None

    @property
    def image_type(self) -> str:
        if self.kernel == "true":
            return "kernel"
        if self.ramdisk == "true":
            return "ramdisk"
        return "machine"

    def check(self) -> None:
        """The combinations euca2ools refuses, refused the same way (one sentence each)."""
        user = self.user.replace("-", "")
        if not user.isascii() or not user.isdigit() or len(user) > 20:
            raise InvalidArgumentError(f"--user must be an account number, not '{self.user[:40]}'.")
        if self.architecture not in ARCHITECTURES:
            raise InvalidArgumentError(f"--arch must be one of {', '.join(ARCHITECTURES)}.")
        if not 16 <= self.part_size <= 5 << 30:
            raise InvalidArgumentError("--part-size must be between 16 bytes and 5 GiB.")
        for option, value in (("--kernel", self.kernel), ("--ramdisk", self.ramdisk)):
            if value is not None:
                check_token(value, f"{option} value")
        if self.image_type == "kernel" and (self.ramdisk or self.block_device_mappings):
            raise InvalidArgumentError(
                "A kernel image (--kernel true) takes no --ramdisk and no --block-device-mapping."
            )
        if self.image_type == "ramdisk" and (self.kernel or self.block_device_mappings):
            raise InvalidArgumentError(
                "A ramdisk image (--ramdisk true) takes no --kernel and no --block-device-mapping."
            )
        for virtual, device in self.block_device_mappings:
            check_token(virtual, "block device mapping name")
            check_token(device, "block device mapping device")
        for code in self.product_codes:
            check_token(code, "product code")


def parse_block_device_mappings(text: str) -> tuple[tuple[str, str], ...]:
    """``ami=sda1,root=/dev/sda1`` → ((virtual, device), ...)."""
    mappings = []
    for item in text.split(","):
        virtual, equals, device = item.strip().partition("=")
        if not equals or not virtual or not device:
            raise InvalidArgumentError(f"'{item[:60]}' is not VIRTUAL=DEVICE (e.g. ami=sda1,root=/dev/sda1).")
        mappings.append((check_token(virtual, "block device mapping name"), check_token(device, "device")))
    return tuple(mappings)


def default_prefix(image: Path, image_type: str) -> str:
    """The image's file name (euca2ools' default); a disk converted to raw is named NAME.img."""
    if image_type != "machine":
        return image.name
    lowered = image.name.lower()
    if lowered.endswith((".img", ".raw")):
        return image.name
    stem = image.name.split(".", 1)[0] or "image"
    return f"{stem}.img"


@dataclass
class BundleResult:
    manifest: str
    prefix: str
    image_type: str
    image_size: int
    image_digest: str
    bundled_size: int
    parts: list[dict[str, Any]]
    seconds: float
    #: The encryption key and IV (hex); kept by the caller only for tests and benchmarks.
    key: str = field(repr=False, default="")
    iv: str = field(repr=False, default="")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("key")
        data.pop("iv")
        return data


class PartWriter:
    """Splits a byte stream into ``PREFIX.part.NN`` files of ``part_size`` bytes, each hashed.

    Every part is an ``AtomicOutput`` held open in ``stack`` until the whole bundle is done.
    """

    def __init__(
        self, directory: Path, prefix: str, part_size: int, stack: contextlib.ExitStack, force: bool
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.part_size = part_size
        self._stack = stack
        self._force = force
        self.parts: list[BundlePart] = []
        #: sha256 of each part as written (for checksum lists; the manifest holds the SHA-1).
        self.sha256: dict[str, str] = {}
        self.outputs: list[AtomicOutput] = []
        self._file: SequentialFile | None = None
        # Finished parts are fsynced (waiting for their bytes to reach the disk) by a thread
        # of their own, so writing the next part does not wait for it.
        self._syncing = ThreadPoolExecutor(1, thread_name_prefix="bundle-part-sync")
        self._synced: list[Future[None]] = []

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._file is None or self._file.size >= self.part_size:
                self._close_part()
                name = f"{self.prefix}.part.{len(self.outputs):02}"
                output = self._stack.enter_context(AtomicOutput(self.directory / name, force=self._force))
                self.outputs.append(output)
                self._file = SequentialFile(output.path, ("sha1", "sha256"))
            take = min(len(view), self.part_size - self._file.size)
            self._file.write(view[:take])
            view = view[take:]

    def _close_part(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        name = self.outputs[-1].target.name
        digests = self._file.digests()
        self.parts.append(BundlePart(name, digests["sha1"], self._file.size))
        self.sha256[name] = digests["sha256"]
        self._synced.append(self._syncing.submit(self._file.finish))
        self._file = None

    def finish(self) -> None:
        self._close_part()
        self._syncing.shutdown(wait=True)
        for future in self._synced:
            future.result()

    def close(self) -> None:
        self._syncing.shutdown(wait=True)  # an error is finish's to raise
        if self._file is not None:
            self._file.close()


class BundleWriter:
    """A ``GrainTarget`` making the bundle's tar → SHA-1 → gzip → AES-128-CBC → parts."""

    def __init__(
        self, name: str, image_size: int, key: bytes, iv: bytes, parts: PartWriter, level: int
    ) -> None:
        self.image_size = image_size
        self._parts = parts
        self._level = level
        # The manifest's digest (SHA-1, by definition) of the whole tar stream, zeros included:
        # the longest single piece of a bundle's work, so it runs on a thread of its own,
        # fed a batch's data runs (at most 1 MiB each) and zero run lengths. Hashing a long
        # zero run takes a while (0.1 s per 200 MiB) in which nothing else has work unless
        # the data after it can be queued meanwhile: up to _TAR_DIGEST_QUEUE items wait.
        self._tar_digest = BackgroundHashes(("sha1",), depth=_TAR_DIGEST_QUEUE)
        cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
        self._encryptor = cipher.encryptor()
        # The gzip member's bytes are gathered before they are encrypted: a grain's block is a
        # few bytes to a few dozen KiB, and each cipher call has a cost of its own. PKCS#7
        # padding is added by hand at the end (AES-CBC needs whole 16-byte blocks only there).
        self._gathered = GatherBuffer(_ENCRYPT_BLOCK, self._encrypt)
        self._encrypted = bytearray(_ENCRYPT_BLOCK + _AES_BLOCK)
        self._gzip = GzipMember(self._gathered.write)
        self._add(ustar_header(name, image_size))

    def _encrypt(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), _ENCRYPT_BLOCK):
            written = self._encryptor.update_into(view[start : start + _ENCRYPT_BLOCK], self._encrypted)
            if written:
                self._parts.write(memoryview(self._encrypted)[:written])

    def _add(self, data: bytes) -> None:
        self._tar_digest.update(data)
        self._gzip.add(deflate_block(data, self._level))

    def batch(self, batch: GrainBatch) -> None:
        for run in batch.runs:
            if run.data is None:
                self._tar_digest.update_zeros(run.length)
            else:
                self._tar_digest.update(run.data)
        self._gzip.add_joined(batch.deflated, batch.crc32, batch.length)

    def tar_digest(self) -> str:
        """The SHA-1 of the tar stream (once ``finish`` ran)."""
        return self._tar_digest.hexdigests()["sha1"]

    def close(self) -> None:
        self._tar_digest.close()

    def finish(self) -> None:
        pad = padding(self.image_size)
        self._add(pad + end_of_archive(BLOCK + self.image_size + len(pad)))
        self._gzip.finish()
        pkcs7 = _AES_BLOCK - self._gathered.size % _AES_BLOCK  # PKCS#7: 1..16 bytes of their count
        self._gathered.write(bytes([pkcs7]) * pkcs7)
        self._gathered.flush()
        tail = self._encryptor.finalize()
        self._parts.write(tail)
        self._parts.finish()


class BundleJob:
    """One bundle being written into ``directory``: its parts, its writer, then its manifest.

    ``writer`` is the ``GrainTarget`` of the pass; ``complete()`` writes the manifest once the
    pass is done, ``commit()`` puts the parts and then the manifest in place. Everything is
    held in ``stack`` (leaving it without ``commit`` removes every file written).
    """

    def __init__(
        self,
        directory: Path,
        prefix: str,
        image_size: int,
        options: BundleOptions,
        stack: contextlib.ExitStack,
        *,
        force: bool = False,
        level: int = DEFAULT_LEVEL,
        key: bytes | None = None,
        iv: bytes | None = None,
    ) -> None:
        options.check()
        if not directory.is_dir():
            raise ImageIOError(f"The bundle directory {directory} does not exist.")
        self.options = options
        self.user_cert = load_certificate_file(options.user_certificate)[0]
        self.cloud_cert = load_certificate_file(options.cloud_certificate)[0]
        self.private_key = load_private_key(options.private_key)
        self.prefix = check_plain_name(prefix, "a bundle prefix")
        self.image_size = image_size
        self.key_hex = (key or secrets.token_bytes(16)).hex()
        self.iv_hex = (iv or secrets.token_bytes(16)).hex()
        self.manifest_out = stack.enter_context(
            AtomicOutput(directory / f"{self.prefix}.manifest.xml", force=force)
        )
        self.parts = PartWriter(directory, self.prefix, options.part_size, stack, force)
        stack.callback(self.parts.close)
        self.writer = BundleWriter(
            self.prefix,
            image_size,
            bytes.fromhex(self.key_hex),
            bytes.fromhex(self.iv_hex),
            self.parts,
            level,
        )
        stack.callback(self.writer.close)
        self.manifest: BundleManifest | None = None

    def complete(self) -> BundleManifest:
        """Write the manifest (after the pass)."""
        options = self.options
        key, iv = self.key_hex.encode("ascii"), self.iv_hex.encode("ascii")
        manifest = BundleManifest(
            name=self.prefix,
            user=options.user.replace("-", ""),
            image_type=options.image_type,
            architecture=options.architecture,
            image_digest=self.writer.tar_digest(),
            image_size=self.image_size,
            bundled_size=sum(part.size for part in self.parts.parts),
            ec2_encrypted_key=encrypt_for(self.cloud_cert, key).hex(),
            user_encrypted_key=encrypt_for(self.user_cert, key).hex(),
            ec2_encrypted_iv=encrypt_for(self.cloud_cert, iv).hex(),
            user_encrypted_iv=encrypt_for(self.user_cert, iv).hex(),
            parts=self.parts.parts,
            block_device_mappings=list(options.block_device_mappings),
            product_codes=list(options.product_codes),
            kernel_id=options.kernel,
            ramdisk_id=options.ramdisk,
            bundler=("imagewright", __version__, "0"),
        )
        # EC2 bundle manifests are signed with SHA-1 by definition (spec digest section 3.4).
        manifest.signature = sign_with(self.private_key, manifest.signed_bytes(), "SHA1").hex()
        try:
            self.manifest_out.path.write_bytes(manifest.to_xml())
        except OSError as err:
            raise io_error(err, self.manifest_out.target) from None
        self.manifest = manifest
        return manifest

    def commit(self) -> None:
        # The directory's entries are flushed once, with the manifest's (the parts' come first).
        for output in self.parts.outputs:
            output.commit(sync_directory=False)
        self.manifest_out.commit()

    def result(self, seconds: float) -> BundleResult:
        assert self.manifest is not None
        return BundleResult(
            manifest=str(self.manifest_out.target),
            prefix=self.prefix,
            image_type=self.options.image_type,
            image_size=self.image_size,
            image_digest=self.manifest.image_digest,
            bundled_size=self.manifest.bundled_size,
            parts=[{"filename": p.filename, "size": p.size, "sha1": p.sha1} for p in self.parts.parts],
            seconds=seconds,
            key=self.key_hex,
            iv=self.iv_hex,
        )


def bundle_image(
    image: str | Path,
    directory: str | Path,
    options: BundleOptions,
    *,
    force: bool = False,
    limits: Limits | None = None,
    progress: Progress | None = None,
    level: int = DEFAULT_LEVEL,
    key: bytes | None = None,
    iv: bytes | None = None,
) -> BundleResult:
    """Bundle ``image`` into ``directory``; see the module docstring."""
    started = time.monotonic()
    options.check()
    image_path, out_dir = Path(image), Path(directory)
    if not out_dir.is_dir():
        raise ImageIOError(f"The bundle directory {out_dir} does not exist.")
    prefix = options.prefix or default_prefix(image_path, options.image_type)
    with contextlib.ExitStack() as stack:
        if options.image_type == "machine":
            scratch = stack.enter_context(ScratchFiles(out_dir / prefix))
            source = read_source(image_path, scratch.scratch, limits, progress)
            job = BundleJob(
                out_dir, prefix, source.virtual_size, options, stack, force=force, level=level, key=key, iv=iv
            )
            run_pass(source, [job.writer], progress=progress, level=level)
        else:
            size = _file_size(image_path)
            job = BundleJob(out_dir, prefix, size, options, stack, force=force, level=level, key=key, iv=iv)
            _stream_file_once(image_path, size, job.writer, progress, level)
        job.complete()
        job.commit()
    return job.result(time.monotonic() - started)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as err:
        raise io_error(err, path, "reading") from None


def _stream_file_once(
    path: Path, size: int, writer: BundleWriter, progress: Progress | None, level: int
) -> None:
    """A kernel or ramdisk: the file's own bytes (it is not a disk image) through the grains."""
    if size == 0:
        raise InvalidArgumentError(f"{path} is empty; there is nothing to bundle.")

    def report(done: int) -> None:
        if progress is not None:
            progress("bundling", done, size)

    stream = GrainStream(size, [writer], level=level, progress=report)
    try:
        stream_file(path, stream)
        stream.finish()
    finally:
        stream.close()


# --- reading a bundle back -------------------------------------------------------------------


@dataclass
class BundleCheck:
    """What ``verify-bundle`` found."""

    manifest: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    signature: str = "not checked"
    parts_checked: int = 0
    image_digest: str = "not checked"
    image_type: str = ""
    image_size: int = 0
    #: What the manifest says (as it says it: EC2 ids such as ``aki-…`` for the links).
    name: str = ""
    architecture: str = ""
    kernel_id: str | None = None
    ramdisk_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _load_manifest(path: Path) -> ReadManifest:
    try:
        with path.open("rb") as f:
            data = f.read(8 << 20)
    except OSError as err:
        raise io_error(err, path, "reading") from None
    return read_manifest(data)


def _signature_ok(read: ReadManifest, keys: list[rsa.RSAPublicKey]) -> bool:
    signature = read.manifest.signature or ""
    if not signature or signature.upper() == "UNSIGNED":
        return False
    try:
        raw = bytes.fromhex(signature)
    except ValueError:
        return False
    # The bytes as written first; a pretty-printed manifest is checked in the compact form signed.
    return any(
        verify_with(key, raw, data, "SHA1")
        for data in (read.signed_bytes_as_written, read.manifest.signed_bytes())
        for key in keys
    )


def _check_parts(directory: Path, manifest: BundleManifest, check: BundleCheck) -> None:
    total = 0
    for part in manifest.parts:
        path = directory / part.filename
        digest = hashlib.sha1()  # noqa: S324 - what the manifest lists
        size = 0
        try:
            with path.open("rb") as f:
                while chunk := f.read(_READ):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            check.problems.append(f"the part '{part.filename}' is missing")
            continue
        except OSError as err:
            raise io_error(err, path, "reading") from None
        total += size
        if digest.hexdigest() != part.sha1:
            check.problems.append(
                f"the part '{part.filename}' does not match its SHA1 digest in the manifest"
            )
        check.parts_checked += 1
    if not check.problems and total != manifest.bundled_size:
        check.problems.append(f"the parts hold {total} bytes, but the manifest says {manifest.bundled_size}")


def _decrypt_key(manifest: BundleManifest, key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    """The AES key and IV: the user's fields first, then the cloud's (as euca2ools does)."""
    for key_field, iv_field in (
        (manifest.user_encrypted_key, manifest.user_encrypted_iv),
        (manifest.ec2_encrypted_key, manifest.ec2_encrypted_iv),
    ):
        try:
            key_hex = decrypt_with(key, bytes.fromhex(key_field)).decode("ascii").strip()
            iv_hex = decrypt_with(key, bytes.fromhex(iv_field)).decode("ascii").strip()
            return bytes.fromhex(key_hex), bytes.fromhex(iv_hex)
        except (SignatureError, ValueError, UnicodeDecodeError):
            continue
    raise SignatureError("The private key opens neither the user's nor the cloud's copy of the bundle's key.")


def verify_bundle(
    manifest_path: str | Path,
    *,
    certificate: Path | None = None,
    private_key: Path | None = None,
    output: Callable[[str], Path] | None = None,
) -> BundleCheck:
    """Check a bundle: signature, every part, and (with ``private_key``) the image digest.

    ``output(member_name)``: where pass 2 writes the image (``unbundle``); without it the
    image is decrypted and checked but not kept.
    """
    path = Path(manifest_path)
    read = _load_manifest(path)
    manifest = read.manifest
    check = BundleCheck(
        manifest=str(path),
        image_type=manifest.image_type,
        image_size=manifest.image_size,
        name=manifest.name,
        architecture=manifest.architecture,
        kernel_id=manifest.kernel_id,
        ramdisk_id=manifest.ramdisk_id,
    )
    keys: list[rsa.RSAPublicKey] = []
    if certificate is not None:
        public = load_certificate_file(certificate)[0].public_key()
        if isinstance(public, rsa.RSAPublicKey):
            keys.append(public)
    private = load_private_key(private_key) if private_key is not None else None
    if private is not None:
        keys.append(private.public_key())
    if keys:
        check.signature = "valid" if _signature_ok(read, keys) else "INVALID"
        if check.signature != "valid":
            check.problems.append(
                "the manifest's signature does not verify with the certificate or key given"
            )
    else:
        check.warnings.append("the signature was not checked (give --cert, or the signer's --privatekey)")
    _check_parts(path.parent, manifest, check)
    if check.problems or private is None:
        if private is None:
            check.warnings.append(
                "the image digest was not checked (it needs --privatekey to decrypt the parts)"
            )
        return check
    aes_key, aes_iv = _decrypt_key(manifest, private)
    _unbundle_pass(path.parent, manifest, aes_key, aes_iv, check, output)
    return check


def _read_parts(directory: Path, manifest: BundleManifest) -> Iterator[bytes]:
    for part in manifest.parts:
        path = directory / part.filename
        try:
            with path.open("rb") as f:
                while chunk := f.read(_READ):
                    yield chunk
        except OSError as err:
            raise io_error(err, path, "reading") from None


class _TarImage:
    """Consumes the decompressed tar stream: checks its one member, writes it (or not)."""

    def __init__(self, manifest: BundleManifest, output: Callable[[str], Path] | None) -> None:
        self.manifest = manifest
        self.output = output
        self.sha1 = hashlib.sha1()  # noqa: S324 - the manifest's digest algorithm
        self._head = b""
        self.member_size: int | None = None
        self._done = 0
        self._file: OutputFile | None = None
        self.received = 0
        # The tar stream cannot hold more than the member, its header and the padding.
        self.limit = BLOCK + manifest.image_size + 2 * 10240 + BLOCK

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.received += len(data)
        if self.received > self.limit:
            raise UnsafeImageError(
                "The bundle decompresses to more than its manifest's image size allows; refused as a bomb."
            )
        self.sha1.update(data)
        view = memoryview(data)
        if self.member_size is None:
            need = BLOCK - len(self._head)
            self._head += bytes(view[:need])
            view = view[need:]
            if len(self._head) < BLOCK:
                return
            self._start()
        assert self.member_size is not None
        take = min(len(view), self.member_size - self._done)
        if take:
            self._write(view[:take])
            view = view[take:]
        if view and any(view):
            raise UnsafeImageError("The bundle's tar stream holds more than one member; refused.")

    def _start(self) -> None:
        try:
            header = parse_header(self._head)
        except TarHeaderError as err:
            raise ImageFormatError(
                f"The bundle's tar stream does not start with a tar header ({err})."
            ) from None
        name = header.name.decode("utf-8", "replace")
        if header.typeflag not in (b"0", b"\0"):
            raise UnsafeImageError(f"The bundle's tar member '{name[:80]}' is not a regular file; refused.")
        try:
            check_plain_name(name, "an unbundled image's name")
        except InvalidArgumentError:
            raise UnsafeImageError(
                f"The bundle's tar member is named '{name[:80]}', not a plain file name; refused."
            ) from None
        if header.size != self.manifest.image_size:
            expected = self.manifest.image_size
            raise ImageFormatError(
                f"The bundle's tar member holds {header.size} bytes, but the manifest says {expected}."
            )
        self.member_size = header.size
        self.name = name
        if self.output is not None:
            self._file = OutputFile(self.output(name))

    def _write(self, data: memoryview) -> None:
        if self._file is not None:
            # Zero blocks become holes: a sparse raw disk stays sparse.
            for start in range(0, len(data), len(_ZERO)):
                block = data[start : start + len(_ZERO)]
                if block != _ZERO[: len(block)]:
                    self._file.write_at(self._done + start, block)
        self._done += len(data)

    def finish(self) -> None:
        if self.member_size is None or self._done != self.member_size:
            raise ImageFormatError("The bundle's tar stream ends before its image does.")
        if self._file is not None:
            self._file.finish(self.member_size)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _unbundle_pass(
    directory: Path,
    manifest: BundleManifest,
    key: bytes,
    iv: bytes,
    check: BundleCheck,
    output: Callable[[str], Path] | None,
) -> None:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = sym_padding.PKCS7(128).unpadder()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    tar = _TarImage(manifest, output)
    try:
        for chunk in _read_parts(directory, manifest):
            data = unpadder.update(decryptor.update(chunk))
            while data:
                tar.feed(inflater.decompress(data, _READ))
                data = inflater.unconsumed_tail
        try:
            data = unpadder.update(decryptor.finalize()) + unpadder.finalize()
        except ValueError:
            raise ImageFormatError("The bundle's parts do not decrypt with its key (bad padding).") from None
        tar.feed(inflater.decompress(data))
        while not inflater.eof and inflater.unconsumed_tail:
            tar.feed(inflater.decompress(inflater.unconsumed_tail, _READ))
        if not inflater.eof or inflater.unused_data:
            raise ImageFormatError("The bundle's compressed stream is truncated or followed by other data.")
        tar.finish()
    except zlib.error:
        raise ImageFormatError("The bundle's parts do not decrypt to a gzip stream.") from None
    finally:
        tar.close()
    digest = tar.sha1.hexdigest()
    if digest != manifest.image_digest:
        check.problems.append("the image's SHA1 digest does not match the manifest")
        check.image_digest = "MISMATCH"
    else:
        check.image_digest = "valid"


@dataclass
class UnbundleResult:
    image: str
    size: int
    check: BundleCheck


def unbundle(
    manifest_path: str | Path,
    directory: str | Path,
    private_key: Path,
    *,
    certificate: Path | None = None,
    force: bool = False,
) -> UnbundleResult:
    """Write the bundle's image into ``directory`` once every check passed (else nothing)."""
    out_dir = Path(directory)
    if not out_dir.is_dir():
        raise ImageIOError(f"The directory {out_dir} does not exist.")
    with contextlib.ExitStack() as stack:
        outputs: list[AtomicOutput] = []

        def output(name: str) -> Path:
            out = stack.enter_context(AtomicOutput(out_dir / name, force=force))
            outputs.append(out)
            return out.path

        check = verify_bundle(manifest_path, certificate=certificate, private_key=private_key, output=output)
        if not check.ok:
            raise UnsafeImageError(f"{manifest_path} is refused: {check.problems[0]}", tuple(check.problems))
        (out,) = outputs
        out.commit()
        return UnbundleResult(str(out.target), check.image_size, check)
