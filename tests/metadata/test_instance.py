from __future__ import annotations

import base64
import contextlib
import struct
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fixtures.tools import run
from tests.metadata.conftest import KeyPair

from imagewright.errors import ImagewrightError, InvalidArgumentError
from imagewright.metadata.instance import (
    ExtraHost,
    InstanceDescription,
    SshPublicKey,
    collect_keys,
    parse_extra_host,
    parse_mac,
    parse_ssh_public_keys,
    read_ssh_key_file,
    read_user_data,
    validate_hostname,
    validate_identifier,
)


def test_real_keys_of_every_common_type_are_read_back_exactly(
    ed25519_key: KeyPair, rsa_key: KeyPair, ecdsa_key: KeyPair
) -> None:
    for pair in (ed25519_key, rsa_key, ecdsa_key):
        (key,) = read_ssh_key_file(pair.public)
        assert key.line == pair.public_line
        # ssh-keygen agrees the line we carry is the same public key.
        fingerprint = run("ssh-keygen", "-l", "-f", pair.public).stdout.split()[1]
        tmp = pair.public.with_suffix(".check")
        tmp.write_text(key.line + "\n")
        assert run("ssh-keygen", "-l", "-f", tmp).stdout.split()[1] == fingerprint


def test_authorized_keys_style_file_with_comments_and_blank_lines(
    tmp_path: Path, ed25519_key: KeyPair, rsa_key: KeyPair
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# team keys\n\n{ed25519_key.public_line}\n   \n{rsa_key.public_line}\n")
    keys = read_ssh_key_file(path)
    assert [k.line for k in keys] == [ed25519_key.public_line, rsa_key.public_line]


def test_duplicate_keys_across_files_are_kept_once(ed25519_key: KeyPair, rsa_key: KeyPair) -> None:
    a = read_ssh_key_file(ed25519_key.public)
    b = read_ssh_key_file(rsa_key.public)
    assert collect_keys([a, b, a]) == a + b


def test_private_key_is_refused_with_a_hint(ed25519_key: KeyPair) -> None:
    with pytest.raises(InvalidArgumentError, match=r"private key; give the public key \(the \.pub file\)"):
        read_ssh_key_file(ed25519_key.private)


def test_rfc4716_key_is_refused_with_the_conversion_command(tmp_path: Path, rsa_key: KeyPair) -> None:
    path = tmp_path / "ssh2.pub"
    path.write_bytes(run("ssh-keygen", "-e", "-f", rsa_key.public).stdout)
    with pytest.raises(InvalidArgumentError, match="ssh-keygen -i -f"):
        read_ssh_key_file(path)


def test_options_prefix_is_refused(ed25519_key: KeyPair) -> None:
    with pytest.raises(InvalidArgumentError, match="authorized_keys options"):
        parse_ssh_public_keys(f'no-pty,command="x" {ed25519_key.public_line}', "keys")


def test_blob_of_another_type_is_refused(ed25519_key: KeyPair) -> None:
    blob = ed25519_key.public_line.split()[1]
    with pytest.raises(InvalidArgumentError, match="not a ssh-rsa key"):
        parse_ssh_public_keys(f"ssh-rsa {blob}", "keys")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "holds no SSH public key"),
        ("# only a comment\n", "holds no SSH public key"),
        ("hello world", "not an OpenSSH public key"),
        ("ssh-ed25519", "no key data"),
        ("ssh-ed25519 !!!notbase64", "not valid base64"),
        ("ssh-ed25519 AAAA", "too short"),
        (
            "ssh-ed25519 " + base64.b64encode(struct.pack(">I", 11) + b"ssh-ed25519").decode(),
            "no key material",
        ),
        (
            "ssh-ed25519 " + base64.b64encode(struct.pack(">I", 999) + b"ssh").decode(),
            "not a ssh-ed25519 key",
        ),
        ("ssh-ed25519-cert-v01@openssh.com AAAA", "certificate"),
        ("ssh-ed25519 " + "A" * 30000, "far too long"),
    ],
)
def test_bad_key_text_is_one_sentence(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_ssh_public_keys(text, "The SSH key file 'k'")
    assert reason in str(caught.value)


def test_control_characters_in_a_comment_are_refused(ed25519_key: KeyPair) -> None:
    key_type, blob = ed25519_key.public_line.split()[:2]
    with pytest.raises(InvalidArgumentError, match="control characters"):
        SshPublicKey(key_type, blob, "evil\x1b[2J")


def test_unreadable_and_missing_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot be read: No such file"):
        read_ssh_key_file(tmp_path / "missing.pub")
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        read_ssh_key_file(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(InvalidArgumentError, match="larger than the 1 KiB allowed"):
        read_user_data(big, limit=1024)
    binary = tmp_path / "binary.pub"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidArgumentError, match="not text"):
        read_ssh_key_file(binary)


@pytest.mark.parametrize(
    "name", ["a", "web-1", "web1.example.com", "x" * 63, ".".join(["a" * 63] * 3) + ".b"]
)
def test_valid_hostnames(name: str) -> None:
    assert validate_hostname(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-web",
        "web-",
        "we_b",
        "web..example",
        "web.example.",
        "x" * 64,
        "a." * 127 + "ab",
        "wéb",
        "a b",
        "a/b",
        "a'b",
    ],
)
def test_invalid_hostnames(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="hostname"):
        validate_hostname(name)


@pytest.mark.parametrize(
    "value", ["i-0abc", "iid-local01", "0", "6f1a2b3c-1d2e-4f50-8a9b-0c1d2e3f4a5b", "a.b_c-d"]
)
def test_valid_identifiers(value: str) -> None:
    assert validate_identifier(value, "instance id") == value


@pytest.mark.parametrize("value", ["", "-x", ".x", "a b", "a/b", "a'b", "a:b", "a\nb", "x" * 129, "$(id)"])
def test_invalid_identifiers(value: str) -> None:
    with pytest.raises(InvalidArgumentError, match="instance id"):
        validate_identifier(value, "instance id")


def test_mac_addresses_are_normalised_and_checked() -> None:
    assert parse_mac("52-54-00-AB-CD-EF") == "52:54:00:ab:cd:ef"
    assert parse_mac(" 52:54:00:12:34:56 ") == "52:54:00:12:34:56"
    for bad in ("52:54:00:12:34", "52:54-00:12:34:56", "zz:54:00:12:34:56", "5254.0012.3456"):
        with pytest.raises(InvalidArgumentError, match="six hexadecimal pairs"):
            parse_mac(bad)
    with pytest.raises(InvalidArgumentError, match="multicast"):
        parse_mac("01:00:5e:00:00:01")


def test_extra_hosts() -> None:
    assert parse_extra_host("db.internal=192.0.2.20") == ExtraHost("db.internal", IPv4Address("192.0.2.20"))
    for bad, reason in [
        ("db", "NAME=IP"),
        ("=1.2.3.4", "NAME=IP"),
        ("db=", "NAME=IP"),
        ("db=1.2.3", "not an IPv4"),
        ("db=::1", "IPv6"),
        ("d_b=1.2.3.4", "extra host name"),
    ]:
        with pytest.raises(InvalidArgumentError, match=reason):
            parse_extra_host(bad)


def test_instance_description_validates_everything() -> None:
    instance = InstanceDescription("i-1", "h", mac="52-54-00-AA-BB-CC")
    assert instance.mac == "52:54:00:aa:bb:cc"
    with pytest.raises(InvalidArgumentError, match="hostname"):
        InstanceDescription("i-1", "bad_host")
    with pytest.raises(InvalidArgumentError, match="instance id"):
        InstanceDescription("i 1", "h")
    with pytest.raises(InvalidArgumentError, match="image id"):
        InstanceDescription("i-1", "h", image_id="ami/1")
    with pytest.raises(InvalidArgumentError, match="given twice"):
        InstanceDescription(
            "i-1",
            "h",
            extra_hosts=(
                ExtraHost("DB", IPv4Address("192.0.2.1")),
                ExtraHost("db", IPv4Address("192.0.2.2")),
            ),
        )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_as_a_key_file_gives_keys_or_an_imagewright_error(text: str) -> None:
    with contextlib.suppress(ImagewrightError):
        parse_ssh_public_keys(text, "keys")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_real_keys_give_keys_or_an_imagewright_error(
    data: st.DataObject, ed25519_key: KeyPair
) -> None:
    line = bytearray(ed25519_key.public_line.encode())
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        position = data.draw(st.integers(min_value=0, max_value=len(line) - 1))
        line[position] = data.draw(st.integers(min_value=0x20, max_value=0x7E))
    try:
        keys = parse_ssh_public_keys(line.decode(), "keys")
    except ImagewrightError:
        return
    # Whatever survives is a well-formed key of its declared type.
    for key in keys:
        raw = base64.b64decode(key.blob)
        (length,) = struct.unpack(">I", raw[:4])
        assert raw[4 : 4 + length].decode() == key.key_type


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_as_mac_host_or_extra_host_gives_a_value_or_an_imagewright_error(text: str) -> None:
    for parse in (parse_mac, parse_extra_host, validate_hostname, lambda t: validate_identifier(t, "id")):
        with contextlib.suppress(ImagewrightError):
            parse(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "Z", "9", "-", ".", "_", "é", " "]), max_size=70))
def test_accepted_hostnames_are_rfc1123(chars: list[str]) -> None:
    name = "".join(chars)
    try:
        validate_hostname(name)
    except InvalidArgumentError:
        return
    assert len(name) <= 253
    for label in name.split("."):
        assert 1 <= len(label) <= 63
        assert label[0] != "-" and label[-1] != "-"
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in label)
