"""``--store`` values: what parses, and one sentence for every way a value can be wrong."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from imagewright.errors import ImagewrightError, StoreError
from imagewright.stores.spec import FileStoreSpec, S3StoreSpec, parse_store_spec, parse_store_specs


def test_file_spec_unnamed_is_default_id() -> None:
    spec = parse_store_spec("file:///srv/images")
    assert spec == FileStoreSpec(id="default", is_default=False, root=PurePosixPath("/srv/images"))


def test_file_spec_named_with_default_mark_and_escapes() -> None:
    spec = parse_store_spec("fast=file:///srv/fast%20disk?default=true")
    assert spec == FileStoreSpec(id="fast", is_default=True, root=PurePosixPath("/srv/fast disk"))
    assert parse_store_spec("file://localhost/srv/x?default").is_default is True


def test_s3_spec_full() -> None:
    spec = parse_store_spec("bulk=s3://images-1/glance/v2/?endpoint=http://127.0.0.1:8080&region=eu-west-1")
    assert spec == S3StoreSpec(
        id="bulk",
        is_default=False,
        bucket="images-1",
        prefix="glance/v2",
        endpoint="http://127.0.0.1:8080",
        region="eu-west-1",
        addressing="path",
    )


def test_s3_spec_aws_defaults_to_virtual_addressing() -> None:
    spec = parse_store_spec("s3://my.bucket")
    assert isinstance(spec, S3StoreSpec)
    assert (spec.prefix, spec.endpoint, spec.region, spec.addressing) == ("", None, None, "virtual")
    spec = parse_store_spec("s3://bkt?endpoint=https://s3.example.com&addressing=virtual")
    assert isinstance(spec, S3StoreSpec)
    assert spec.addressing == "virtual"


def test_several_specs() -> None:
    specs = parse_store_specs(["fast=file:///srv/fast", "bulk=s3://bkt?endpoint=http://h:1&default=1"])
    assert [(s.id, s.is_default) for s in specs] == [("fast", False), ("bulk", True)]


BAD_SPECS = [
    ("", "empty value"),
    ("/srv/images", "is not a store URL"),
    ("ftp://host/dir", "scheme 'ftp'"),
    ("file://srv/images", "three slashes"),
    ("file:relative", "absolute directory"),
    ("file:///", "root directory"),
    ("file:///srv/../etc", "'.' or '..'"),
    ("file:///srv/x?mode=1", "unknown parameter 'mode'"),
    ("file:///srv/x#frag", "fragment"),
    ("file:///srv/x?default=maybe", "is not true or false"),
    ("bad name=file:///srv/x", "is not a name"),
    ("s3://", "names no bucket"),
    ("s3://AB", "is not an S3 bucket name"),
    ("s3://Upper_Case", "is not an S3 bucket name"),
    ("s3://a..b", "is not an S3 bucket name"),
    ("s3://key:secret@bucket", "credentials in the URL"),
    ("s3://bucket?endpoint=http://key:secret@host", "carries credentials"),
    ("s3://bucket?endpoint=ftp://host", "is not an http:// or https:// URL"),
    ("s3://bucket?endpoint=http://host:99999", "bad port"),
    ("s3://bucket?region=EU WEST", "is not a region name"),
    ("s3://bucket?addressing=dns", "neither path nor virtual"),
    ("s3://bucket?secret_key=x", "unknown parameter 'secret_key'"),
    ("s3://bucket?region=a&region=b", "twice"),
    ("s3://bucket/a/../b", "may not be '.' or '..'"),
    ("s3://bucket/a b", "prefix parts may hold"),
]


@pytest.mark.parametrize(("text", "needle"), BAD_SPECS)
def test_bad_spec_is_one_sentence(text: str, needle: str) -> None:
    with pytest.raises(StoreError) as info:
        parse_store_spec(text)
    message = str(info.value)
    assert needle in message
    assert isinstance(info.value, ImagewrightError)
    assert message.endswith(".") and "\n" not in message


@pytest.mark.parametrize(
    ("texts", "needle"),
    [
        (["file:///a", "b=file:///b"], "give each a name"),
        (["x=file:///a", "x=file:///b"], "named 'x'"),
        (["a=file:///a?default=1", "b=file:///b?default=yes"], "mark one"),
        (["a=file:///srv/img", "b=file:///srv/img/sub"], "share a directory"),
        (["a=file:///srv/img", "b=file:///srv/img"], "share a directory"),
        (["a=s3://bkt/p?endpoint=http://h:1", "b=s3://bkt/p/q?endpoint=http://h:1"], "share the bucket"),
        (["a=s3://bkt?endpoint=http://h:1", "b=s3://bkt/p?endpoint=http://h:1"], "share the bucket"),
    ],
)
def test_bad_spec_sets(texts: list[str], needle: str) -> None:
    with pytest.raises(StoreError, match=needle):
        parse_store_specs(texts)


def test_same_bucket_on_other_endpoints_or_prefixes_is_fine() -> None:
    specs = parse_store_specs(
        [
            "a=s3://bkt/p?endpoint=http://h:1",
            "b=s3://bkt/q?endpoint=http://h:1",
            "c=s3://bkt?endpoint=http://g:1",
        ]
    )
    assert [s.id for s in specs] == ["a", "b", "c"]
