"""``--store`` values: ``[NAME=]file:///abs/dir``, ``[NAME=]s3://BUCKET[/prefix]?endpoint=URL&region=R``
and ``NAME=file-inplace:///abs/dir`` (files registered where they are: ``stores.inplace``).

Several at once make a multi-store registry, as Glance's ``enabled_backends`` do; the first
one, or the one whose URL carries ``default=true``, is the default. Every way a value can be
wrong is refused with one sentence that names the value and says what to write instead.
Credentials never go into a store URL: S3 stores take them from boto3's standard chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws/credentials``, an instance role).

S3 query parameters: ``endpoint`` (an http(s) URL; absent = AWS), ``region`` (absent = the
boto3 chain's, else us-east-1), ``addressing`` (``path`` or ``virtual``; default ``path`` with
an endpoint, as Swift, Ceph RGW and MinIO expect, else ``virtual``), ``default``.
Bucket names follow the S3 rules (3-63 lower-case letters, digits, '.', '-').
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, unquote, urlsplit

from imagewright.errors import StoreError

STORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
PREFIX_COMPONENT = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_TRUE = {"", "1", "true", "yes"}
_FALSE = {"0", "false", "no"}
_S3_PARAMETERS = ("endpoint", "region", "addressing", "default")
_EXAMPLES = "file:///srv/images or s3://BUCKET/prefix?endpoint=https://host:port"


@dataclass(frozen=True)
class FileStoreSpec:
    id: str
    is_default: bool
    root: PurePosixPath


@dataclass(frozen=True)
class S3StoreSpec:
    id: str
    is_default: bool
    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing "/")
    endpoint: str | None
    region: str | None
    addressing: str  # "path" | "virtual"


@dataclass(frozen=True)
class InPlaceStoreSpec:
    """Files registered in place under ``root`` (never the default: it takes no uploads)."""

    id: str
    root: PurePosixPath
    is_default: bool = False


StoreSpec = FileStoreSpec | S3StoreSpec | InPlaceStoreSpec


def _split_name(text: str) -> tuple[str | None, str]:
    """``"fast=file:///x"`` → ("fast", "file:///x"); a URL whose query holds "=" has no name."""
    head, sep, rest = text.partition("=")
    if not sep or ":" in head or "/" in head or "?" in head:
        return None, text
    if not STORE_NAME.fullmatch(head):
        raise StoreError(
            f"The store name {head!r} in --store {text!r} is not a name: use up to 64 letters, "
            "digits, '_' or '-', starting with a letter or digit."
        )
    return head, rest


def _flag(value: str, text: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise StoreError(f"default={value!r} in --store {text!r} is not true or false.")


def _query(query: str, text: str, allowed: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise StoreError(
                f"--store {text!r} has an unknown parameter {name!r}; "
                f"the parameters it may have are: {', '.join(allowed)}."
            )
        if name in params:
            raise StoreError(f"--store {text!r} gives the parameter {name!r} twice.")
        params[name] = value
    return params


def _file_spec(name: str, text: str, url: str) -> FileStoreSpec:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise StoreError(
            f"--store {text!r} does not name an absolute directory: write file:///abs/dir (three slashes)."
        )
    if parts.fragment:
        raise StoreError(f"--store {text!r} has a '#' fragment, which a file store URL cannot have.")
    params = _query(parts.query, text, ("default",))
    path = unquote(parts.path)
    if not path.startswith("/") or "\0" in path:
        raise StoreError(f"--store {text!r} does not name an absolute directory: write file:///abs/dir.")
    if any(part in (".", "..") for part in path.split("/")):
        raise StoreError(f"--store {text!r} has '.' or '..' in its path; write the directory plainly.")
    root = PurePosixPath(path)
    if root == PurePosixPath("/"):
        raise StoreError(f"--store {text!r} names the root directory; give a directory of its own.")
    return FileStoreSpec(id=name, is_default=_flag(params.get("default", "false"), text), root=root)


def _s3_spec(name: str, text: str, url: str) -> S3StoreSpec:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise StoreError(
            f"--store {text!r} carries credentials in the URL; remove them and set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials) instead."
        )
    bucket = parts.netloc
    if not bucket:
        raise StoreError(f"--store {text!r} names no bucket; write s3://BUCKET[/prefix]?endpoint=URL.")
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise StoreError(
            f"{bucket!r} in --store {text!r} is not an S3 bucket name: use 3 to 63 lower-case "
            "letters, digits, '.' or '-', starting and ending with a letter or digit."
        )
    if parts.fragment:
        raise StoreError(f"--store {text!r} has a '#' fragment, which an S3 store URL cannot have.")
    components = [c for c in unquote(parts.path).split("/") if c]
    for component in components:
        if not PREFIX_COMPONENT.fullmatch(component) or component in (".", ".."):
            raise StoreError(
                f"The prefix of --store {text!r} has the part {component!r}; prefix parts may hold "
                "letters, digits, '_', '-' and '.', and may not be '.' or '..'."
            )
    params = _query(parts.query, text, _S3_PARAMETERS)
    endpoint = params.get("endpoint") or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname or ep.query or ep.fragment:
            raise StoreError(
                f"The endpoint {endpoint!r} of --store {text!r} is not an http:// or https:// URL "
                "of a host (such as https://s3.example.com:8080)."
            )
        if ep.username or ep.password:
            raise StoreError(
                f"The endpoint of --store {text!r} carries credentials; remove them and set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials) instead."
            )
        try:
            ep.port  # noqa: B018 -- urlsplit checks the port only when asked
        except ValueError:
            raise StoreError(f"The endpoint {endpoint!r} of --store {text!r} has a bad port.") from None
    region = params.get("region") or None
    if region is not None and not re.fullmatch(r"[a-z0-9-]{1,64}", region):
        raise StoreError(f"The region {region!r} of --store {text!r} is not a region name such as us-east-1.")
    addressing = params.get("addressing") or ("path" if endpoint else "virtual")
    if addressing not in ("path", "virtual"):
        raise StoreError(f"addressing={addressing!r} in --store {text!r} is neither path nor virtual.")
    return S3StoreSpec(
        id=name,
        is_default=_flag(params.get("default", "false"), text),
        bucket=bucket,
        prefix="/".join(components),
        endpoint=endpoint,
        region=region,
        addressing=addressing,
    )


def parse_store_spec(text: str, default_name: str = "default") -> StoreSpec:
    """Parse one ``--store`` value; ``default_name`` is the id of a store given without a name."""
    if not text or not text.strip():
        raise StoreError(f"--store was given an empty value; write {_EXAMPLES}.")
    name, url = _split_name(text.strip())
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        return _file_spec(name or default_name, text, url)
    if scheme == "s3":
        return _s3_spec(name or default_name, text, url)
    if scheme == "file-inplace":
        if name is None:
            raise StoreError(
                f"--store {text!r} needs a name (NAME=file-inplace:///dir): image register-local names "
                "the store it registers into."
            )
        plain = _file_spec(name, text, "file" + url[len("file-inplace") :])
        if plain.is_default:
            raise StoreError(
                f"--store {text!r} cannot be the default: an in-place store registers files and takes "
                "no uploads."
            )
        return InPlaceStoreSpec(id=name, root=plain.root)
    if not scheme:
        raise StoreError(f"--store {text!r} is not a store URL; write {_EXAMPLES}.")
    raise StoreError(
        f"--store {text!r} uses the scheme {scheme!r}; the stores imagewright has are file://, s3:// "
        "and file-inplace://."
    )


def parse_store_specs(texts: Sequence[str]) -> list[StoreSpec]:
    """Parse all ``--store`` values and check them together (unique names, one default, no overlap)."""
    named = [_split_name(t.strip())[0] is not None for t in texts if t and t.strip()]
    if len(texts) > 1 and not all(named):
        raise StoreError("With several --store values, give each a name: --store NAME=URL.")
    specs = [parse_store_spec(t) for t in texts]
    seen: dict[str, StoreSpec] = {}
    for spec in specs:
        if spec.id in seen:
            raise StoreError(f"Two --store values are named {spec.id!r}; give each store its own name.")
        seen[spec.id] = spec
    defaults = [s.id for s in specs if s.is_default]
    if len(defaults) > 1:
        raise StoreError(f"The stores {', '.join(defaults)} are all marked default=true; mark one.")
    refuse_overlaps(specs)
    return specs


def refuse_overlaps(specs: Sequence[StoreSpec]) -> None:
    """Two stores writing into the same space would delete each other's blobs in their sweeps."""
    for i, a in enumerate(specs):
        for b in specs[i + 1 :]:
            if isinstance(a, InPlaceStoreSpec | FileStoreSpec) and isinstance(
                b, InPlaceStoreSpec | FileStoreSpec
            ):
                if a.root == b.root or a.root in b.root.parents or b.root in a.root.parents:
                    raise StoreError(
                        f"The stores {a.id!r} ({a.root}) and {b.id!r} ({b.root}) share a directory; "
                        "give each store a directory of its own."
                    )
            elif (
                isinstance(a, S3StoreSpec)
                and isinstance(b, S3StoreSpec)
                and (a.endpoint, a.bucket) == (b.endpoint, b.bucket)
            ):
                pa, pb = PurePosixPath("/", a.prefix), PurePosixPath("/", b.prefix)
                if pa == pb or pa in pb.parents or pb in pa.parents:
                    raise StoreError(
                        f"The stores {a.id!r} and {b.id!r} share the bucket {a.bucket!r} and prefix; "
                        "give each store a prefix of its own."
                    )
