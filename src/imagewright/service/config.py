"""How a registry is configured: one value object, passed to every worker process as JSON.

``imagewright serve`` builds a ``ServiceConfig`` from its options, prepares the catalog and the
stores once, and hands the config to uvicorn's workers through the environment variable
``IMAGEWRIGHT_SERVICE_CONFIG`` (uvicorn starts ``--workers N`` as fresh processes that import
the app factory by name, so nothing else survives the trip). Each worker opens its own catalog
connection pool and stores from it; no worker holds state another would need.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imagewright.errors import InvalidArgumentError

ENVIRONMENT_VARIABLE = "IMAGEWRIGHT_SERVICE_CONFIG"
DEFAULT_LISTEN = "127.0.0.1:8970"
DEFAULT_REGION = "RegionOne"


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path
    #: SQLAlchemy URL of the catalog (``sqlite:///DATA_DIR/catalog.sqlite`` by default).
    database_url: str
    #: ``--store`` values as given (``[]``: one file store under DATA_DIR/images).
    store_specs: tuple[str, ...] = ()
    #: The URL clients reach the service at (``http://HOST:PORT``), used in catalogs and links.
    public_url: str = "http://127.0.0.1:8970"
    region: str = DEFAULT_REGION
    #: Seconds an upload lease lasts without renewal, and how often the sweep runs.
    upload_lease_seconds: float = 60.0
    sweep_interval_seconds: float = 60.0
    #: Incomplete store writes idle this long are removed by the periodic sweep.
    incomplete_grace_seconds: float = 3600.0
    #: The largest image accepted (Glance's ``image_size_cap``, 1 TiB by default).
    image_size_cap: int = 1 << 40
    # --- background work (``service.tasks``) ---
    #: Who runs import/export tasks: ``embedded`` (threads of each server process) or
    #: ``procrastinate`` (``imagewright worker`` processes on the catalog's PostgreSQL).
    task_queue: str = "embedded"
    #: Task threads per server process (embedded queue).
    task_threads: int = 1
    #: Seconds a task lease lasts without a heartbeat, and how often a task may be tried.
    task_lease_seconds: float = 30.0
    task_attempts: int = 3
    #: URL prefixes web-download may fetch from whatever their address (``--web-download-allow``).
    web_download_allow: tuple[str, ...] = ()
    #: Seconds without a byte before a web-download fails, and its overall limit.
    web_download_idle_timeout: float = 60.0
    web_download_timeout: float = 6 * 3600.0
    #: ``FORMAT`` (every store) or ``STORE=FORMAT``: what imports are converted to (``--convert-to``).
    convert_to: tuple[str, ...] = ()
    #: Keep the data of a converted import as it arrived, as a second blob (``--keep-original``).
    keep_original: bool = False
    #: ``NAME=CLOUD@CLOUDS_YAML``: other Glance-compatible registries glance-download copies from.
    glance_regions: tuple[str, ...] = ()
    #: How long an export's download URL (and its blob) stays valid.
    export_ttl_seconds: float = 24 * 3600.0
    #: What the service logs to stderr (``--log-level``, ``service.logs.LEVELS``).
    log_level: str = "info"
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["data_dir"] = str(self.data_dir)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServiceConfig:
        data = json.loads(text)
        data["data_dir"] = Path(data["data_dir"])
        for name, value in data.items():
            if isinstance(value, list):
                data[name] = tuple(value)  # JSON has no tuples
        return cls(**data)

    @classmethod
    def from_environment(cls) -> ServiceConfig:
        text = os.environ.get(ENVIRONMENT_VARIABLE)
        if not text:
            raise InvalidArgumentError(
                f"{ENVIRONMENT_VARIABLE} is not set; start the registry with 'imagewright serve'."
            )
        return cls.from_json(text)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgumentError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:8970).")
    return host.strip("[]"), int(port_text)


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
