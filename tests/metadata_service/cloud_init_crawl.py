"""Crawl the metadata service with cloud-init's own datasource code; print what it read as JSON.

Run as ``python cloud_init_crawl.py CLOUDINIT_SITE KIND BASE_URL SOURCE MAC`` where KIND is
``ec2-aws`` (DataSourceEc2 on a platform identified as AWS: IMDSv2 token, identity document),
``ec2`` (an unidentified EC2 clone: IMDSv1) or ``openstack`` (DataSourceOpenStack's reader).
SOURCE is the loopback address every connection to BASE_URL's port is made from (the
instance's fixed address), or ``-`` to leave it to the kernel. A separate process, so cloud-init's
imports and logging stay out of the test process. Nothing is sent anywhere but BASE_URL.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import tempfile
from typing import Any
from urllib.parse import urlsplit


def bind_source(address: str, port: int) -> None:
    original = socket.socket.connect

    def connect(self: socket.socket, target: Any) -> None:
        if self.family == socket.AF_INET and isinstance(target, tuple) and target[1] == port:
            self.bind((address, 0))
        original(self, target)

    socket.socket.connect = connect  # type: ignore[method-assign]


def _b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else str(data or "").encode()
    return base64.b64encode(raw).decode()


def crawl_ec2(base: str, cloud_name: str, mac: str) -> dict[str, Any]:
    from cloudinit import helpers
    from cloudinit.sources import DataSourceEc2

    work = tempfile.mkdtemp()
    config = {"datasource": {"Ec2": {"metadata_urls": [base], "max_wait": 20, "timeout": 5}}}
    source = DataSourceEc2.DataSourceEc2(config, None, helpers.Paths({"cloud_dir": work, "run_dir": work}))
    source._cloud_name = cloud_name
    crawled = source.crawl_metadata()
    metadata = crawled["meta-data"]
    network = DataSourceEc2.convert_ec2_metadata_network_config(
        metadata["network"], macs_to_nics={mac: "ens3"}
    )
    return {
        "api_version": crawled["_metadata_api_version"],
        "metadata_address": source.metadata_address,
        "used_token": bool(getattr(source, "_api_token", None)),
        "metadata": metadata,
        "userdata_b64": _b64(crawled["user-data"]),
        "identity": crawled.get("dynamic", {}).get("instance-identity"),
        "network": network,
    }


def crawl_openstack(base: str, mac: str) -> dict[str, Any]:
    from cloudinit.sources.helpers import ec2, openstack

    class Reader(openstack.MetadataReader):  # type: ignore[misc]
        # DataSourceOpenStack's reader asks 169.254.169.254 for the EC2 part (its base URL there);
        # here the service is elsewhere, so the same call is pointed at it.
        def _read_ec2_metadata(self) -> Any:
            return ec2.get_instance_metadata(
                metadata_address=base,
                ssl_details=self.ssl_details,
                timeout=self.timeout,
                retries=self.retries,
            )

    results = Reader(base, timeout=5, retries=1).read_v2()
    network = openstack.convert_net_json(results["networkdata"], known_macs={mac: "ens3"})
    return {
        "version": results["version"],
        "metadata": results["metadata"],
        "userdata_b64": _b64(results.get("userdata")),
        "vendordata": results.get("vendordata"),
        "vendordata2": results.get("vendordata2"),
        "networkdata": results["networkdata"],
        "network": network,
        "ec2_metadata": results.get("ec2-metadata"),
    }


def main() -> None:
    site, kind, base, source, mac = sys.argv[1:6]
    sys.path.insert(0, site)
    if source != "-":
        bind_source(source, int(urlsplit(base).port or 80))
    if kind == "openstack":
        result = crawl_openstack(base, mac)
    else:
        result = crawl_ec2(base, "aws" if kind == "ec2-aws" else "unknown", mac)
    json.dump(result, sys.stdout, default=str)


if __name__ == "__main__":
    main()
