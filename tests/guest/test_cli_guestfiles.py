"""``imagewright cat``, ``ls`` and ``copy-in`` as a user types them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from tests.guest.images import ALICE, GuestImage, cat, converted, listing, sha256_file, to_raw

from imagewright.cli.guestfiles import split_image_path
from imagewright.errors import InvalidArgumentError
from imagewright.files import TEMP_MARK

pytestmark = pytest.mark.integration

RunCli = Callable[..., Result]


def error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagewright: error: "), result.stderr
    return lines[0]


def test_split_image_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert split_image_path("disk.img:/etc/hosts") == (Path("disk.img"), "/etc/hosts")
    assert split_image_path("a:b.img:/etc/x") == (Path("a:b.img"), "/etc/x")
    assert split_image_path("/abs/disk.qcow2:/") == (Path("/abs/disk.qcow2"), "/")
    # A guest path holding ':/' too: the split whose image exists wins.
    (tmp_path / "real:disk").write_bytes(b"")
    assert split_image_path("real:disk:/etc/a:/b") == (Path("real:disk"), "/etc/a:/b")
    for bad in ("disk.img", "disk.img:etc/x", ":/etc"):
        with pytest.raises(InvalidArgumentError):
            split_image_path(bad)


def test_cat_prints_exact_bytes(run_cli: RunCli, flat_image: GuestImage) -> None:
    result = run_cli(["cat", f"{flat_image.path}:/etc/hostname"])
    assert result.exit_code == 0
    assert result.stdout_bytes == b"used-vm\n"
    random_seed = run_cli(["cat", f"{flat_image.path}:/var/lib/systemd/random-seed"])
    assert random_seed.stdout_bytes == cat(flat_image, "/var/lib/systemd/random-seed")
    assert len(random_seed.stdout_bytes) == 512


def test_cat_follows_links_and_reads_partitions(run_cli: RunCli, mbr_image: GuestImage) -> None:
    assert run_cli(["cat", f"{mbr_image.path}:/sbin/init"]).stdout_bytes == b"\x7fELF"
    boot = run_cli(["ls", "--partition", "1", f"{mbr_image.path}:/"])
    assert boot.stdout.split() == ["grub", "lost+found"]


def test_cat_errors(run_cli: RunCli, flat_image: GuestImage, tmp_path: Path) -> None:
    assert "does not exist in" in error_line(run_cli(["cat", f"{flat_image.path}:/etc/nothing"]))
    assert "is a directory, not a file" in error_line(run_cli(["cat", f"{flat_image.path}:/etc"]))
    assert "does not exist" in error_line(run_cli(["cat", f"{tmp_path}/none.raw:/etc/x"]))
    assert "is not IMAGE:/PATH" in error_line(run_cli(["cat", str(flat_image.path)]))


def test_ls_plain_long_and_json(run_cli: RunCli, flat_image: GuestImage) -> None:
    plain = run_cli(["ls", f"{flat_image.path}:/home/alice"])
    assert plain.stdout.split() == [".bash_history", "notes.txt"]
    long = run_cli(["ls", "-l", f"{flat_image.path}:/sbin"])
    assert long.stdout == "lrwxrwxrwx      0      0         20 init -> /lib/systemd/systemd\n"
    notes = run_cli(["ls", "-l", f"{flat_image.path}:/home/alice/notes.txt"])
    assert notes.stdout == f"-rw-r--r--   {ALICE}   {ALICE}          8 notes.txt\n"
    data = json.loads(run_cli(["ls", "--json", f"{flat_image.path}:/etc/ssh"]).stdout)
    entries = {e["name"]: e for e in data["entries"]}
    assert entries["ssh_host_rsa_key"]["mode"] == "0600" and entries["ssh_host_rsa_key"]["type"] == "file"
    assert len(entries) == 7


def test_ls_an_image_whose_name_holds_a_colon(
    run_cli: RunCli, flat_image: GuestImage, tmp_path: Path
) -> None:
    odd = tmp_path / "vm:1.raw"
    os.rename(flat_image.path, odd)
    result = run_cli(["ls", f"{odd}:/root"])
    assert result.exit_code == 0 and result.stdout.split() == [".bash_history"]


def test_copy_in_with_mode_and_owner(run_cli: RunCli, flat_image: GuestImage, tmp_path: Path) -> None:
    source = tmp_path / "motd with space"
    source.write_bytes(b"welcome\n")
    result = run_cli(
        ["copy-in", source, f"{flat_image.path}:/etc/motd", "--mode", "0640", "--owner", "alice:4"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"copied {source} (8 bytes) to {flat_image.path}:/etc/motd [-rw-r----- 1000:4]"
    )
    assert cat(flat_image, "/etc/motd") == b"welcome\n"
    assert listing(flat_image, "/etc")["motd"] == (0o100640, ALICE, 4, 8)


def test_copy_in_into_a_directory_keeps_the_name(
    run_cli: RunCli, mbr_image: GuestImage, tmp_path: Path
) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024))
    result = run_cli(["copy-in", source, f"{mbr_image.path}:/root/", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["path"] == "/root/payload.bin" and report["size"] == 3 * 1024 * 1024
    assert cat(mbr_image, "/root/payload.bin") == source.read_bytes()


def test_copy_in_a_qcow2(run_cli: RunCli, flat_image: GuestImage, tmp_path: Path) -> None:
    image = converted(flat_image, "qcow2", tmp_path / "disk.qcow2", "cluster_size=65536")
    source = tmp_path / "hosts"
    source.write_text("127.0.0.1 localhost\n")
    assert run_cli(["copy-in", source, f"{image.path}:/etc/hosts"]).exit_code == 0
    assert cat(to_raw(image, tmp_path / "back.raw"), "/etc/hosts") == b"127.0.0.1 localhost\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "rw-r--r--"], "'rw-r--r--' is not an octal file mode such as 0644."),
        (["--mode", "17777"], "'17777' is not a file mode (0000 to 7777)."),
        (
            ["--owner", "nobody-here"],
            "'nobody-here' is not a number and not listed in the guest's /etc/passwd.",
        ),
    ],
)
def test_copy_in_bad_options_leave_the_image(
    run_cli: RunCli, flat_image: GuestImage, tmp_path: Path, args: list[str], message: str
) -> None:
    source = tmp_path / "f"
    source.write_text("x")
    before = sha256_file(flat_image.path)
    assert message in error_line(run_cli(["copy-in", source, f"{flat_image.path}:/etc/f", *args]))
    assert sha256_file(flat_image.path) == before
    assert not [p for p in tmp_path.iterdir() if TEMP_MARK in p.name]


def test_cat_of_a_large_file_streams(run_cli: RunCli, flat_image: GuestImage, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(6 * 1024 * 1024))
    assert run_cli(["copy-in", big, f"{flat_image.path}:/var/big"]).exit_code == 0
    result = run_cli(["cat", f"{flat_image.path}:/var/big"])
    assert result.stdout_bytes == big.read_bytes()
