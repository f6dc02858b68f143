"""The metadata service's ASGI app: who is asking, IMDSv2 tokens, and one lookup per answer.

A bare ASGI callable rather than a Starlette app: the whole work of a request here is a few
dictionary lookups, so the framework's per-request layers would be most of the cost (measured
on one core in ``bench/metadata``; Starlette costs roughly a third of the throughput there).

**Who is asking** (in this order; the first that applies decides):

1. The request came through the forwarders' unix socket (``channel="forwarder"``): the
   instance is the one ``X-Instance-ID`` names, if ``X-Instance-ID-Signature`` is its HMAC
   under the shared secret (Nova's scheme); else nobody.
2. The peer address is a trusted proxy (``--metadata-trusted-proxy``, by address only, never
   by a header): the same signed headers decide.
3. Otherwise the peer address is an instance's fixed address, or the request is nobody's.
   ``X-Forwarded-For`` and ``X-Instance-ID`` from such a peer are ignored.

Nobody's request is answered 404, whatever it asks; so is every request of an instance whose
``http_endpoint`` is ``disabled``. The server is run with ``proxy_headers`` off: uvicorn would
otherwise rewrite the peer address from ``X-Forwarded-For`` sent from 127.0.0.1.

**Then** (spec digest §4.3): over the rate limit → 429; ``PUT /latest/api/token`` → 403 with
``X-Forwarded-For``, 400 without a TTL of 1-21600, else a token bound to the instance; another
method than GET/HEAD/PUT → 405; a token header that is not a valid unexpired token of this
instance → 401, no token when the instance requires one → 401; then the path: 200 with the body,
or 404. Paths are looked up exactly (one trailing ``/`` ignored), so ``..`` or ``//`` find
nothing. Every request is written to the access log. An unexpected failure is logged and
answered 500 with no detail.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from imagewright.errors import CatalogError
from imagewright.metadata.forwarder import instance_signature
from imagewright.metadata.imds import EC2_VERSIONS, OPENSTACK_VERSIONS
from imagewright.service.imds.access_log import AccessLog
from imagewright.service.imds.cache import CachedInstance, InstanceCache, RateBucket
from imagewright.service.imds.tokens import SessionTokens, parse_ttl

LOG = logging.getLogger("imagewright.metadata")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path
_EC2_VERSIONS = frozenset(EC2_VERSIONS)
_OPENSTACK_VERSIONS = frozenset(OPENSTACK_VERSIONS)
_VERSIONS_LISTING = "\n".join(EC2_VERSIONS).encode("ascii")
_OPENSTACK_LISTING = "\n".join(OPENSTACK_VERSIONS).encode("ascii")
_INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")
_TEXT = b"text/plain"
_JSON = b"application/json"
_MAX_PATH = 1024
#: Duplicate identity headers are treated as a wrong signature.
_DUPLICATE = b"\x00"

_STATUS_BODIES = {
    400: b"Missing or Invalid Parameters",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class MetadataService:
    """What every listener of one process shares: the cache, the keys, the log, the limits."""

    def __init__(
        self,
        cache: InstanceCache,
        tokens: SessionTokens,
        proxy_secret: bytes,
        access_log: AccessLog,
        *,
        trusted_proxies: tuple[str, ...] = (),
        rate_limit: float | None = None,
    ) -> None:
        self.cache = cache
        self.tokens = tokens
        self.access_log = access_log
        self.trusted_proxies = frozenset(trusted_proxies)
        self.rate_limit = rate_limit
        self._proxy_secret = proxy_secret
        self._signatures: dict[str, bytes] = {}

    def signature_matches(self, instance_id: str, signature: bytes) -> bool:
        expected = self._signatures.get(instance_id)
        if expected is None:
            expected = instance_signature(self._proxy_secret, instance_id).encode("ascii")
            if len(self._signatures) > 65536:
                self._signatures.clear()
            self._signatures[instance_id] = expected
        return hmac.compare_digest(expected, signature)

    async def by_signed_headers(
        self, instance_id: bytes | None, signature: bytes | None
    ) -> CachedInstance | None:
        if not instance_id or not signature or _DUPLICATE in (instance_id, signature):
            return None
        try:
            text = instance_id.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not _INSTANCE_ID_RE.match(text) or not self.signature_matches(text, signature):
            return None
        return await self.cache.by_id_lookup(text)

    def over_limit(self, entry: CachedInstance) -> bool:
        if self.rate_limit is None:
            return False
        now = time.monotonic()
        bucket = entry.bucket
        if bucket is None:
            bucket = entry.bucket = RateBucket(self.rate_limit, self.rate_limit, now)
        return not bucket.take(now)


def lookup(entry: CachedInstance, path: str) -> tuple[bytes, bytes] | None:
    """(body, content type) for ``path`` of this instance, or None (404)."""
    key = path.strip("/")
    if not key:
        return _VERSIONS_LISTING, _TEXT
    version, _, rest = key.partition("/")
    if version in _EC2_VERSIONS:
        body = entry.ec2.get(rest)
        return (body, _TEXT) if body is not None else None
    if version == "openstack":
        if not rest:
            return _OPENSTACK_LISTING, _TEXT
        os_version, _, name = rest.partition("/")
        if os_version not in _OPENSTACK_VERSIONS:
            return None
        body = entry.openstack.get(name)
        if body is None:
            return None
        return body, (_JSON if name.endswith(".json") else _TEXT)
    return None


class MetadataApp:
    """The ASGI app of one listener: the network one, or the forwarders' unix socket."""

    def __init__(self, service: MetadataService, *, forwarder_channel: bool) -> None:
        self.service = service
        self.forwarder_channel = forwarder_channel

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        try:
            await self._handle(scope, send)
        except CatalogError as err:
            # The instance could not be looked up (the catalog is down): clients retry on 503.
            LOG.error("metadata request failed: %s", err)
            await _respond(send, 503, _STATUS_BODIES[503], _TEXT, head=False)
        except Exception:
            LOG.exception("metadata request failed")
            await _respond(send, 500, _STATUS_BODIES[500], _TEXT, head=False)

    async def _identify(
        self, scope: Scope, source: str, instance_id: bytes | None, signature: bytes | None
    ) -> CachedInstance | None:
        service = self.service
        if self.forwarder_channel or source in service.trusted_proxies:
            return await service.by_signed_headers(instance_id, signature)
        if not source:
            return None
        return await service.cache.by_address_lookup(source)

    async def _handle(self, scope: Scope, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        token = ttl = forwarded = instance_header = signature = None
        for name, value in scope["headers"]:
            if name == b"x-aws-ec2-metadata-token":
                token = value
            elif name == b"x-aws-ec2-metadata-token-ttl-seconds":
                ttl = value
            elif name == b"x-forwarded-for":
                forwarded = value
            elif name == b"x-instance-id":
                instance_header = _DUPLICATE if instance_header is not None else value
            elif name == b"x-instance-id-signature":
                signature = _DUPLICATE if signature is not None else value
        if self.forwarder_channel:
            source = "forwarder"
        else:
            client = scope.get("client")
            source = client[0] if client else ""
            if source.startswith("::ffff:"):
                source = source[7:]

        entry = None
        if len(path) <= _MAX_PATH:
            entry = await self._identify(scope, source, instance_header, signature)
        if entry is None or not entry.endpoint_enabled:
            status, body, ctype = 404, _STATUS_BODIES[404], _TEXT
        elif self.service.over_limit(entry):
            status, body, ctype = 429, _STATUS_BODIES[429], _TEXT
        elif method == "PUT":
            status, body, ctype = self._put(entry, path, ttl, forwarded)
            if status == 200:
                assert ttl is not None
                await _respond(send, 200, body, _TEXT, head=False, ttl=ttl)
                self._log(source, entry, method, path, 200, len(body))
                return
        elif method not in ("GET", "HEAD") or path.rstrip("/") == TOKEN_PATH:
            status, body, ctype = 405, _STATUS_BODIES[405], _TEXT
        elif not self._token_ok(entry, token):
            status, body, ctype = 401, _STATUS_BODIES[401], _TEXT
        else:
            found = lookup(entry, path)
            if found is None:
                status, body, ctype = 404, _STATUS_BODIES[404], _TEXT
            else:
                status, (body, ctype) = 200, found
        await _respond(send, status, body, ctype, head=method == "HEAD")
        self._log(source, entry, method, path, status, len(body))

    def _put(
        self, entry: CachedInstance, path: str, ttl: bytes | None, forwarded: bytes | None
    ) -> tuple[int, bytes, bytes]:
        if path.rstrip("/") != TOKEN_PATH:
            return 405, _STATUS_BODIES[405], _TEXT
        if forwarded is not None:
            # EC2 issues no token to a request that went through a proxy (SSRF through an
            # application on the instance is the reason IMDSv2 exists).
            return 403, _STATUS_BODIES[403], _TEXT
        seconds = parse_ttl(ttl.decode("latin-1") if ttl is not None else None)
        if seconds is None:
            return 400, _STATUS_BODIES[400], _TEXT
        return 200, self.service.tokens.issue(entry.instance_id, seconds).encode("ascii"), _TEXT

    def _token_ok(self, entry: CachedInstance, token: bytes | None) -> bool:
        if token is None:
            return not entry.tokens_required
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return False
        return self.service.tokens.check(text, entry.instance_id)

    def _log(
        self, source: str, entry: CachedInstance | None, method: str, path: str, status: int, length: int
    ) -> None:
        self.service.access_log.write(
            source or "-", entry.instance_id if entry else None, method, path, status, length
        )


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, *, head: bool, ttl: bytes | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode("ascii"))]
    if ttl is not None:
        headers.append((b"x-aws-ec2-metadata-token-ttl-seconds", ttl))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
