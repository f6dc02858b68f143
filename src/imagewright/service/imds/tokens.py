"""IMDSv2 session tokens: issued by ``PUT /latest/api/token``, bound to one instance, expiring.

A token is self-contained, so no process has to remember it and any process holding the data
dir's ``token.key`` can check it::

    base64url( 0x01 | expires (u32, unix seconds) | nonce (8 bytes) | instance id )
    "." base64url( first 16 bytes of HMAC-SHA256(token key, that payload) )

Checks (spec digest §4.3): the MAC (constant-time compare), the expiry, and that the instance it
names is the instance asking — a token of instance A presented by B is "foreign" and fails like
an invalid one (401). TTL: ``X-aws-ec2-metadata-token-ttl-seconds`` is a decimal integer 1-21600,
else 400. Checked tokens are remembered (token -> instance, expiry) in a bounded dict so a
client reusing its token costs one lookup, not an HMAC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable

MIN_TTL = 1
MAX_TTL = 21600
_VERSION = 1
_MAC_BYTES = 16
_MAX_TOKEN_LENGTH = 512
_REMEMBERED = 65536


def parse_ttl(text: str | None) -> int | None:
    """The TTL header's value if it is a decimal integer in 1..21600, else None."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 5:
        return None
    ttl = int(text)
    return ttl if MIN_TTL <= ttl <= MAX_TTL else None


class SessionTokens:
    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock
        self._checked: dict[str, tuple[str, int]] = {}

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, instance_id: str, ttl: int) -> str:
        expires = int(self._clock()) + ttl
        payload = struct.pack(">BI", _VERSION, expires) + os.urandom(8) + instance_id.encode("ascii")
        encode = base64.urlsafe_b64encode
        return (encode(payload) + b"." + encode(self._mac(payload))).decode("ascii")

    def check(self, token: str, instance_id: str) -> bool:
        """True when ``token`` is ours, unexpired, and was issued to ``instance_id``."""
        now = self._clock()
        known = self._checked.get(token)
        if known is not None:
            return known[0] == instance_id and now < known[1]
        if len(token) > _MAX_TOKEN_LENGTH:
            return False
        payload_text, sep, mac_text = token.partition(".")
        if not sep:
            return False
        try:
            payload = base64.urlsafe_b64decode(payload_text.encode("ascii"))
            mac = base64.urlsafe_b64decode(mac_text.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return False
        if len(payload) < 14 or not hmac.compare_digest(mac, self._mac(payload)):
            return False
        version, expires = struct.unpack(">BI", payload[:5])
        owner = payload[13:].decode("ascii", "replace")
        if version != _VERSION:
            return False
        if len(self._checked) >= _REMEMBERED:
            self._checked.clear()
        self._checked[token] = (owner, expires)
        return owner == instance_id and now < expires
