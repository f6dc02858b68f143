"""The service catalog a token lists: one entry per API the registry serves.

Keystone lists every service with one endpoint per interface (public, internal, admin); clients
pick the ``public`` one of the type they need (``image``, ``identity``; later ``compute``,
``metadata``, ``ec2``). An API that ``imagewright serve`` mounts adds its row here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

INTERFACES = ("public", "internal", "admin")


@dataclass(frozen=True)
class ServiceEntry:
    type: str
    name: str
    #: Where the API is mounted, below the public URL.
    path: str


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("identity", "keystone", "/identity"),
    ServiceEntry("image", "glance", "/image"),
)


def _stable_id(*parts: str) -> str:
    # The same id from every worker and every restart, so clients caching a catalog stay right.
    return uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)).hex


def render_catalog(public_url: str, region: str) -> list[dict[str, Any]]:
    base = public_url.rstrip("/")
    catalog = []
    for service in SERVICES:
        url = base + service.path
        catalog.append(
            {
                "id": _stable_id("service", service.type),
                "type": service.type,
                "name": service.name,
                "endpoints": [
                    {
                        "id": _stable_id("endpoint", service.type, interface, url),
                        "interface": interface,
                        "region": region,
                        "region_id": region,
                        "url": url,
                    }
                    for interface in INTERFACES
                ],
            }
        )
    return catalog
