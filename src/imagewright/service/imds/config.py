"""How a metadata service is configured: one value object (JSON across a process boundary)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from imagewright.errors import InvalidArgumentError
from imagewright.service.config import DEFAULT_REGION

#: Seconds between two reads of the catalog's ``instances`` change counter.
DEFAULT_CACHE_CHECK_SECONDS = 0.5
ACCESS_LOG_OFF = "off"
ACCESS_LOG_STDERR = "-"


@dataclass(frozen=True)
class MetadataConfig:
    data_dir: Path
    database_url: str
    #: (host, port) of the TCP listener; None: only the forwarders' unix socket.
    listen: tuple[str, int] | None = None
    #: Addresses whose requests name the instance in signed headers (Nova's metadata proxy).
    trusted_proxies: tuple[str, ...] = ()
    #: Requests per second per instance (burst as many); None: no limit.
    rate_limit: float | None = None
    #: A file, "-" (stderr) or "off"; None: DATA_DIR/metadata/access.log.
    access_log: str | None = None
    region: str = DEFAULT_REGION
    cache_check_seconds: float = DEFAULT_CACHE_CHECK_SECONDS
    #: What the service logs to stderr (``--log-level``, ``service.logs.LEVELS``).
    log_level: str = "info"
    #: When run as a child of ``imagewright serve``: exit when this process is gone.
    parent_pid: int | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["data_dir"] = str(self.data_dir)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> MetadataConfig:
        data = json.loads(text)
        data["data_dir"] = Path(data["data_dir"])
        data["listen"] = tuple(data["listen"]) if data.get("listen") else None
        data["trusted_proxies"] = tuple(data.get("trusted_proxies", ()))
        return cls(**data)


def parse_trusted_proxy(text: str) -> str:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidArgumentError(f"The trusted proxy {text[:64]!r} is not an IP address.") from None
    return str(address)
