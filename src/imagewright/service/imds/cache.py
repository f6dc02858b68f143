"""The instance cache: every answer of a known instance is one dictionary lookup away.

An instance is loaded from the catalog the first time someone asks for it (by fixed address or
by id), its whole EC2 and OpenStack trees are rendered and its identity document signed, and the
result (``CachedInstance``) is kept. Requests for a cached instance touch no database.
Addresses and ids that name no instance are remembered too (bounded), so a stranger's requests
cost no database round trip either. Concurrent first requests for one key share one load.

**How a change reaches every process.** Instances change through the catalog (the CLI, the
compute API of any ``serve`` process, any machine), and each change raises the catalog's
``instances`` counter in the same transaction (``catalog.instances``). Every metadata process
reads that one row (a primary-key lookup: tens of microseconds on SQLite, one round trip on
PostgreSQL) every ``cache_check_seconds`` (0.5 s by default). When it moved, the process asks
the catalog for the current revisions of the instances it holds, drops those that changed or
went, and forgets every remembered miss; the next request reloads. A load that was already
running when the counter moved is not kept (its result answers that one request only), so a
stale tree is never installed after the drop. Why polling and not a push: it works unchanged on
SQLite (no LISTEN/NOTIFY) and across machines, costs two reads a second per process whatever
the request rate, and bounds staleness by the interval — a deleted instance is forgotten within
about half a second; a new one is found at its first request, unless its address (or id) asked
before and was remembered as nobody's, which is forgotten at the next check too.

What that bound means for isolation: after ``instance delete`` an address could, for up to the
interval, still be answered with the deleted instance's tree if a new instance with the same
address asked before the poll — a new instance needs seconds to boot and ask, and the forwarder
path (which names instances by their never-reused random ids) has no such window at all.

Source: the design question in issue 10; SQLAlchemy sessions are synchronous, so every catalog
read runs in a worker thread and the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from imagewright.catalog import instances
from imagewright.catalog.database import Catalog
from imagewright.metadata.imds import ec2_entries, identity_document, openstack_entries
from imagewright.service.imds.signing import IdentitySigner

LOG = logging.getLogger("imagewright.metadata.cache")
T = TypeVar("T")

#: Remembered misses before the memory of them is cleared (a flood of strangers stays bounded).
MAX_REMEMBERED_MISSES = 65536


@dataclass
class RateBucket:
    """A token bucket: ``rate`` requests per second, bursts of ``rate``."""

    rate: float
    allowance: float
    last: float

    def take(self, now: float) -> bool:
        self.allowance = min(self.rate, self.allowance + (now - self.last) * self.rate)
        self.last = now
        if self.allowance < 1.0:
            return False
        self.allowance -= 1.0
        return True


@dataclass
class CachedInstance:
    instance_id: str
    revision: int
    addresses: tuple[str, ...]
    tokens_required: bool
    endpoint_enabled: bool
    #: path below an EC2 version (no leading/trailing "/"; "" is the version's listing) -> body
    ec2: dict[str, bytes]
    #: file name below an OpenStack version ("" is the listing) -> body
    openstack: dict[str, bytes]
    bucket: RateBucket | None = field(default=None, repr=False)


class InstanceCache:
    def __init__(self, catalog: Catalog, signer: IdentitySigner, region: str) -> None:
        self.catalog = catalog
        self.signer = signer
        self.region = region
        self.by_id: dict[str, CachedInstance] = {}
        self.by_address: dict[str, CachedInstance] = {}
        self._missing_ids: set[str] = set()
        self._missing_addresses: set[str] = set()
        self._inflight: dict[tuple[str, str], asyncio.Future[CachedInstance | None]] = {}
        self.version: int | None = None
        #: Goes up whenever the counter moved; a load begun under an older generation is not kept.
        self.generation = 0
        self.loads = 0

    # --- loading ----------------------------------------------------------------------------

    def _load(self, kind: str, key: str) -> CachedInstance | None:
        with self.catalog.reading() as session:
            if kind == "address":
                row = instances.find_instance_by_address(session, key)
            else:
                row = instances.find_instance(session, key)
            if row is None:
                return None
            served = instances.served_instance(row, self.region)
            revision = row.revision
            tokens_required = row.http_tokens == "required"
            endpoint_enabled = row.http_endpoint == "enabled"
        identity = self.signer.sign(identity_document(served))
        return CachedInstance(
            instance_id=served.instance_id,
            revision=revision,
            addresses=tuple(i.address for i in served.interfaces if i.address),
            tokens_required=tokens_required,
            endpoint_enabled=endpoint_enabled,
            ec2=ec2_entries(served, identity),
            openstack=openstack_entries(served),
        )

    async def _lookup(self, kind: str, key: str) -> CachedInstance | None:
        pending = self._inflight.get((kind, key))
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CachedInstance | None] = asyncio.get_running_loop().create_future()
        self._inflight[(kind, key)] = future
        generation = self.generation
        try:
            entry = await _in_thread(self._load, kind, key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it twice
            raise
        finally:
            del self._inflight[(kind, key)]
        if generation == self.generation:
            self._install(kind, key, entry)
        future.set_result(entry)
        return entry

    def _install(self, kind: str, key: str, entry: CachedInstance | None) -> None:
        self.loads += 1
        if entry is None:
            missing = self._missing_addresses if kind == "address" else self._missing_ids
            if len(missing) >= MAX_REMEMBERED_MISSES:
                missing.clear()
            missing.add(key)
            return
        self.by_id[entry.instance_id] = entry
        for address in entry.addresses:
            self.by_address[address] = entry

    async def by_address_lookup(self, address: str) -> CachedInstance | None:
        entry = self.by_address.get(address)
        if entry is not None or address in self._missing_addresses:
            return entry
        return await self._lookup("address", address)

    async def by_id_lookup(self, instance_id: str) -> CachedInstance | None:
        entry = self.by_id.get(instance_id)
        if entry is not None or instance_id in self._missing_ids:
            return entry
        return await self._lookup("id", instance_id)

    # --- invalidation -----------------------------------------------------------------------

    def _read_version(self) -> int:
        with self.catalog.reading() as session:
            return instances.instances_version(session)

    def _read_revisions(self, ids: list[str]) -> dict[str, int]:
        with self.catalog.reading() as session:
            return instances.revisions(session, ids)

    async def check(self) -> bool:
        """Drop what changed since the last check; True when the counter had moved."""
        version = await _in_thread(self._read_version)
        if version == self.version:
            return False
        self.generation += 1
        current = await _in_thread(self._read_revisions, list(self.by_id))
        for instance_id, entry in list(self.by_id.items()):
            if current.get(instance_id) != entry.revision:
                self.evict(instance_id)
        self._missing_ids.clear()
        self._missing_addresses.clear()
        self.version = version
        return True

    def evict(self, instance_id: str) -> None:
        entry = self.by_id.pop(instance_id, None)
        if entry is None:
            return
        for address in entry.addresses:
            if self.by_address.get(address) is entry:
                del self.by_address[address]

    async def watch(self, interval: float) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                LOG.exception("checking the catalog for instance changes failed")
            await asyncio.sleep(interval)


async def _in_thread(function: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
