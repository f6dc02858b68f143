"""The test metadata responder speaks IMDS: checked with botocore (a real client), curl, and
raw exchanges in its one-connection-per-process mode (QEMU's guestfwd ``cmd:`` interface)."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from botocore.utils import IMDSFetcher, InstanceMetadataRegionFetcher
from tests.fixtures import imds_responder
from tests.fixtures.imds_responder import ImdsConfig, ImdsServer, read_log
from tests.fixtures.tools import run

RESPONDER = Path(imds_responder.__file__)


def config(tmp_path: Path, mode: str = "optional") -> ImdsConfig:
    return ImdsConfig(
        instance_id="i-0abc",
        local_hostname="host.internal",
        public_keys=[("alice", "ssh-ed25519 AAAAC3 alice@x"), ("bob", "ssh-rsa AAAAB3 bob@y")],
        user_data="#!/bin/sh\necho hi\n",
        token_mode=mode,
        log=str(tmp_path / "requests.jsonl"),
    )


def one_exchange(config_file: Path, request: bytes) -> bytes:
    """The guestfwd cmd: interface: one process, the request on stdin, the response on stdout."""
    proc = subprocess.run(
        [sys.executable, str(RESPONDER), str(config_file)],
        input=request,
        capture_output=True,
        timeout=30,
        check=True,
    )
    return proc.stdout


@pytest.mark.parametrize("mode", ["optional", "required", "404", "403", "405"])
def test_botocore_reads_the_region(mode: str, tmp_path: Path) -> None:
    with ImdsServer(config(tmp_path, mode)) as server:
        region = InstanceMetadataRegionFetcher(base_url=server.url + "/", timeout=2).retrieve_region()
        requests = list(server.requests)
    assert region == "us-east-1"
    assert requests[0]["method"] == "PUT" and requests[0]["ttl"] == "21600"
    used_token = mode in ("optional", "required")
    assert all((r["token"] is not None) == used_token for r in requests[1:])


def test_botocore_token_flow_and_leaves(tmp_path: Path) -> None:
    with ImdsServer(config(tmp_path, "required")) as server:
        fetcher = IMDSFetcher(base_url=server.url + "/", timeout=2)
        token = fetcher._fetch_metadata_token()
        assert token == ImdsConfig().token
        response = fetcher._get_request("latest/meta-data/instance-id", None, token)
        assert response.text == "i-0abc"
        response = fetcher._get_request("latest/meta-data/public-keys/1/openssh-key", None, token)
        assert response.text == "ssh-rsa AAAAB3 bob@y"


def test_http_rules_with_curl(tmp_path: Path) -> None:
    cfg = config(tmp_path, "required")
    with ImdsServer(cfg) as server:
        base = server.url

        def curl(*args: str) -> tuple[str, str]:
            out = run("curl", "-s", "-w", "\n%{http_code}", *args).stdout.decode()
            body, _, code = out.rpartition("\n")
            return code, body

        ttl = "X-aws-ec2-metadata-token-ttl-seconds: 60"
        assert curl("-X", "PUT", "-H", ttl, f"{base}/latest/api/token") == ("200", cfg.token)
        assert curl("-X", "PUT", f"{base}/latest/api/token")[0] == "400"
        assert (
            curl(
                "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 21601", f"{base}/latest/api/token"
            )[0]
            == "400"
        )
        assert (
            curl("-X", "PUT", "-H", ttl, "-H", "X-Forwarded-For: 1.2.3.4", f"{base}/latest/api/token")[0]
            == "403"
        )
        assert curl(f"{base}/latest/api/token")[0] == "405"
        assert curl(f"{base}/latest/meta-data/instance-id")[0] == "401"
        token = f"X-aws-ec2-metadata-token: {cfg.token}"
        assert (
            curl("-H", "X-aws-ec2-metadata-token: wrong", f"{base}/latest/meta-data/instance-id")[0] == "401"
        )
        assert curl("-H", token, f"{base}/latest/meta-data/public-keys/") == ("200", "0=alice\n1=bob")
        assert curl("-H", token, f"{base}/latest/meta-data/public-keys/0/") == ("200", "openssh-key")
        listing = curl("-H", token, f"{base}/latest/meta-data/")[1].splitlines()
        assert "instance-id" in listing and "placement/" in listing and "public-keys/" in listing
        assert curl("-H", token, f"{base}/2009-04-04/meta-data/local-hostname") == ("200", "host.internal")
        assert curl("-H", token, f"{base}/latest/user-data") == ("200", cfg.user_data)
        assert (
            '"instanceId": "i-0abc"'
            in curl("-H", token, f"{base}/latest/dynamic/instance-identity/document")[1]
        )
        assert curl("-H", token, f"{base}/latest/meta-data/nope")[0] == "404"
        assert curl("-H", token, f"{base}/")[1].splitlines()[-1] == "latest"
    logged = read_log(tmp_path / "requests.jsonl")
    assert len(logged) == 15
    assert logged[0] == {
        "method": "PUT",
        "path": "/latest/api/token",
        "token": None,
        "ttl": "60",
        "status": 200,
    }


def test_no_user_data_is_404(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.user_data = None
    with ImdsServer(cfg) as server, pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{server.url}/latest/user-data", timeout=5)
    assert err.value.code == 404


def test_one_process_per_connection_mode(tmp_path: Path) -> None:
    cfg = config(tmp_path, "required")
    config_file = cfg.save(tmp_path / "imds.json")

    put = one_exchange(
        config_file, b"PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n"
    )
    head, _, body = put.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"X-aws-ec2-metadata-token-ttl-seconds: 21600" in head
    assert body == cfg.token.encode()

    get = one_exchange(
        config_file,
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n"
        + f"X-aws-ec2-metadata-token: {cfg.token}\r\n\r\n".encode(),
    )
    assert get.startswith(b"HTTP/1.1 200 OK\r\n") and get.endswith(b"\r\n\r\ni-0abc")
    assert one_exchange(config_file, b"GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n").startswith(
        b"HTTP/1.0 401"
    )
    assert one_exchange(config_file, b"garbage\r\n\r\n").startswith(b"HTTP/1.0 400")
    # the silent mode answers nothing at all to the token request
    silent = config(tmp_path, "silent").save(tmp_path / "silent.json")
    assert (
        one_exchange(
            silent, b"PUT /latest/api/token HTTP/1.0\r\nX-aws-ec2-metadata-token-ttl-seconds: 5\r\n\r\n"
        )
        == b""
    )

    logged = read_log(tmp_path / "requests.jsonl")
    assert [entry["status"] for entry in logged] == [200, 200, 401, 400, None]
    assert logged[1]["token"] == cfg.token
