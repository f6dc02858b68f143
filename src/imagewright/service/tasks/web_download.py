"""web-download: fetch an image from a URL into a local file, without becoming an SSRF proxy.

A registry that fetches URLs for its users sits inside the cloud's network: asked for
``http://169.254.169.254/latest/meta-data/iam/…`` or ``http://10.0.0.5:2379/`` it would read
what the user cannot. The rules (Glance's ``[import_filtering_opts]``, tightened):

- **Schemes** ``http`` and ``https`` only; no user:password in the URL.
- **Addresses**: the host is resolved once, and *every* address it resolves to must be public
  (``ipaddress.is_global``): loopback, link-local (169.254.0.0/16 — the metadata service —
  and fe80::/10), private (10/8, 172.16/12, 192.168/16), unique-local (fc00::/7), shared
  (100.64/10), multicast, reserved and unspecified addresses are refused, and so are IPv6
  addresses that embed one (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64). Decimal,
  octal and hex spellings of IPv4 (``2130706433``, ``0177.0.0.1``, ``0x7f.1``) are no way
  around it: what is checked is the address the resolver returned, not the spelling.
- **Ports** 80 and 443 only.
- The operator widens this with allow prefixes (``--web-download-allow http://mirror:8000/``):
  a URL that starts with one (scheme, host and port equal; the path a prefix) may go to any
  address and port the host resolves to.
- **No DNS rebinding**: the connection goes to the address that was checked (the socket is
  opened to that IP; ``Host`` and TLS SNI/certificate checks use the name), never to a second
  resolution of the name.
- **Redirects** (at most ``MAX_REDIRECTS``) are followed by hand and each target is checked by
  the same rules before any connection is made to it.
- A **size cap** (the registry's image size cap, also applied to ``Content-Length`` before the
  first byte), an **idle timeout** (no byte for that long fails) and an **overall deadline**.
- **Resuming**: when the connection ends before ``Content-Length`` bytes, the rest is asked for
  with ``Range: bytes=N-`` (and ``If-Range`` when the server gave a validator); only a ``206``
  whose ``Content-Range`` starts at N is accepted, otherwise the download fails saying so.

Proxies from the environment are ignored on purpose: the checks are about where the bytes come
from. Every failure is a ``WebDownloadError`` whose message names the URL and the cause.

Source: RFC 9110 (§14 Range requests, §15.4 redirects), RFC 6890 / IANA special-purpose address
registries (through Python's ``ipaddress``), OWASP "Server Side Request Forgery Prevention",
Glance ``glance/common/utils.py:validate_import_uri``.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

from imagewright.errors import ImagewrightError

MAX_REDIRECTS = 5
MAX_RESUMES = 5
DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOWED_PORTS = frozenset({80, 443})
CHUNK = 1 << 20
USER_AGENT = "imagewright-registry (web-download)"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``progress(bytes so far, bytes expected or None)``.
DownloadProgress = Callable[[int, int | None], None]


class WebDownloadError(ImagewrightError):
    """A web-download that was refused or failed; the message names the URL and why."""


class DeniedURLError(WebDownloadError):
    """The URL (or a redirect target) is not one the registry may fetch."""


@dataclass(frozen=True)
class AllowPrefix:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, text: str) -> AllowPrefix:
        parts = urlsplit(text.strip())
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise WebDownloadError(
                f"{text!r} is not a URL prefix for --web-download-allow (http://HOST[:PORT]/PATH)."
            )
        if parts.username or parts.password or parts.query or parts.fragment:
            raise WebDownloadError(f"The allow prefix {text!r} may name only scheme, host, port and path.")
        return cls(parts.scheme, parts.hostname.lower(), _port(parts, text), parts.path or "/")

    def matches(self, scheme: str, host: str, port: int, path: str) -> bool:
        return (
            scheme == self.scheme
            and host == self.host
            and port == self.port
            and (path or "/").startswith(self.path)
        )

    def __str__(self) -> str:
        return f"{self.scheme}://{_url_host(self.host)}:{self.port}{self.path}"


def _port(parts: SplitResult, text: str) -> int:
    try:
        port = parts.port
    except ValueError:
        raise DeniedURLError(f"{text} has an invalid port.") from None
    return int(port) if port is not None else DEFAULT_PORTS[parts.scheme]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class UrlPolicy:
    """Where web-download may fetch from (see the module docstring)."""

    allow: tuple[AllowPrefix, ...] = ()

    @classmethod
    def from_prefixes(cls, prefixes: Sequence[str]) -> UrlPolicy:
        return cls(tuple(AllowPrefix.parse(prefix) for prefix in prefixes))

    def prefixes(self) -> list[str]:
        return [str(prefix) for prefix in self.allow]


@dataclass(frozen=True)
class Target:
    """A URL the policy accepted, and the one address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    address: str


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public address (None when it is)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            inner = address_refusal(embedded)
            return f"an IPv6 address embedding {embedded}, {inner}" if inner else None
        if address in ipaddress.IPv6Network("64:ff9b::/96"):
            inner = address_refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            return f"a NAT64 address, {inner}" if inner else None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where clouds serve instance metadata)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.IPv6Network("fc00::/7"):
        return "a unique-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_reserved:
        return "not a public address"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (IP spellings included), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise WebDownloadError(f"The host {host} cannot be resolved ({err}).") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebDownloadError(f"The host {host} resolves to no address.")
    return addresses


def check_url(url: str, policy: UrlPolicy) -> Target:
    """The target to connect to for ``url``, or DeniedURLError saying why it may not be fetched."""
    if len(url) > 4096:
        raise DeniedURLError("The URL is longer than 4096 characters.")
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise DeniedURLError(f"{url} is refused: web-download fetches only http and https URLs.")
    if parts.username is not None or parts.password is not None:
        raise DeniedURLError(f"{_redact(url)} is refused: URLs with a user name or password are not fetched.")
    host = (parts.hostname or "").lower()
    if not host:
        raise DeniedURLError(f"{url} is refused: it names no host.")
    port = _port(parts, url)
    path = parts.path or "/"
    allowed = any(prefix.matches(parts.scheme, host, port, path) for prefix in policy.allow)
    addresses = resolve(host, port)
    if not allowed:
        for address in addresses:
            reason = address_refusal(address)
            if reason is not None:
                named = host if host == str(address) else f"{host} ({address})"
                raise DeniedURLError(
                    f"{url} is refused: {named} is {reason}; web-download fetches only from public "
                    "addresses unless the operator allows the URL with --web-download-allow."
                )
        if port not in ALLOWED_PORTS:
            raise DeniedURLError(
                f"{url} is refused: port {port} is not 80 or 443 (the operator may allow it with "
                "--web-download-allow)."
            )
    request_path = path + (f"?{parts.query}" if parts.query else "")
    return Target(url, parts.scheme, host, port, request_path, str(addresses[0]))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to the checked address, whatever the name resolves to now."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the checked address; SNI and the certificate check use the host name."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@dataclass
class DownloadResult:
    url: str
    #: The URL the bytes came from (after redirects).
    final_url: str
    size: int
    resumed: int


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    idle_timeout: float = 60.0
    total_timeout: float = 6 * 3600.0


def download(
    url: str,
    target_path: Path,
    policy: UrlPolicy,
    limits: Limits,
    *,
    headers: dict[str, str] | None = None,
    progress: DownloadProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_data: Callable[[bytes], None] | None = None,
    on_written: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Fetch ``url`` into ``target_path`` (created or truncated) under ``policy``; see the docstring.

    ``on_data`` sees every byte once, in order (resumed pieces included): a hash of the file.
    ``on_written(n)``: ``n`` more bytes are in the file, readable by another thread (the file
    grows front to back; a reader that converts it as it arrives waits on this).
    """
    deadline = time.monotonic() + limits.total_timeout
    with open(target_path, "wb") as out:

        def write(chunk: bytes) -> None:
            out.write(chunk)
            if on_data is not None:
                on_data(chunk)
            if on_written is not None:
                out.flush()
                on_written(len(chunk))

        fetch = _Fetch(url, policy, limits, deadline, dict(headers or {}), write, progress, should_stop)
        fetch.run()
        # Not fsynced: the file is the task's scratch. What is kept of it is made durable where
        # it is kept (the file store's ``adopt`` fsyncs before its rename, a store writer on
        # ``finish``), and a worker that dies takes its scratch with it (the task starts over).
        out.flush()
    return DownloadResult(url, fetch.final_url, fetch.done, fetch.resumes)


class _Fetch:
    def __init__(
        self,
        url: str,
        policy: UrlPolicy,
        limits: Limits,
        deadline: float,
        headers: dict[str, str],
        write: Callable[[bytes], None],
        progress: DownloadProgress | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.url = url
        self.policy = policy
        self.limits = limits
        self.deadline = deadline
        self.headers = headers
        self.write = write
        self.progress = progress
        self.should_stop = should_stop
        self.final_url = url
        self.done = 0
        self.total: int | None = None
        self.validator: str | None = None
        self.resumes = 0

    def run(self) -> None:
        response, connection = self._open(self.url, None)
        try:
            self._start(response)
            self._read(response)
        finally:
            connection.close()
        while self.total is not None and self.done < self.total:
            if self.resumes >= MAX_RESUMES:
                raise WebDownloadError(
                    f"The download of {self.url} ended after {self.done} of the {self.total} bytes the "
                    f"server announced, and {MAX_RESUMES} attempts to resume it did not complete it."
                )
            self.resumes += 1
            response, connection = self._open(self.final_url, self.done)
            try:
                self._resume(response)
                self._read(response)
            finally:
                connection.close()

    def _open(
        self, url: str, offset: int | None
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """The response for ``url`` (redirects followed and checked), from byte ``offset``."""
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            target = check_url(current, self.policy)
            connection = self._connection(target)
            request_headers = {"User-Agent": USER_AGENT, "Accept": "*/*", **self.headers}
            if offset is not None:
                request_headers["Range"] = f"bytes={offset}-"
                if self.validator:
                    request_headers["If-Range"] = self.validator
            try:
                connection.request("GET", target.path, headers=request_headers)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as err:
                connection.close()
                raise WebDownloadError(f"Fetching {current} failed: {_describe(err)}.") from None
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                connection.close()
                if not location:
                    raise WebDownloadError(f"{current} answered {response.status} without a Location.")
                following = urljoin(current, location.strip())
                if urlsplit(following).netloc != urlsplit(current).netloc:
                    # Credentials meant for one host are never sent to another.
                    self.headers.pop("X-Auth-Token", None)
                    self.headers.pop("Authorization", None)
                current = following
                continue
            self.final_url = current
            return response, connection
        raise WebDownloadError(f"{url} redirected more than {MAX_REDIRECTS} times.")

    def _connection(self, target: Target) -> http.client.HTTPConnection:
        timeout = self.limits.idle_timeout
        if target.scheme == "https":
            return _PinnedHTTPSConnection(target, timeout, ssl.create_default_context())
        return _PinnedHTTPConnection(target, timeout)

    def _start(self, response: http.client.HTTPResponse) -> None:
        if response.status != 200:
            raise WebDownloadError(
                f"{self.final_url} answered {response.status} {response.reason}, not the image."
            )
        length = response.getheader("Content-Length")
        if length is not None:
            if not length.strip().isdigit():
                raise WebDownloadError(f"{self.final_url} sent an invalid Content-Length {length!r}.")
            self.total = int(length)
            if self.total > self.limits.max_bytes:
                raise WebDownloadError(
                    f"{self.final_url} is {self.total} bytes, more than the {self.limits.max_bytes}-byte "
                    "limit of this registry."
                )
        self.validator = response.getheader("ETag") or response.getheader("Last-Modified")
        if self.validator and self.validator.startswith("W/"):
            self.validator = None  # a weak ETag cannot validate a range (RFC 9110 §13.1.5)

    def _resume(self, response: http.client.HTTPResponse) -> None:
        if response.status != 206:
            raise WebDownloadError(
                f"The download of {self.final_url} broke after {self.done} of {self.total} bytes and the "
                f"server did not resume it (it answered {response.status} to a Range request)."
            )
        content_range = response.getheader("Content-Range") or ""
        unit, _, spec = content_range.partition(" ")
        first, _, rest = spec.partition("-")
        _last, _, complete = rest.partition("/")
        if unit != "bytes" or not first.isdigit() or int(first) != self.done:
            raise WebDownloadError(
                f"{self.final_url} resumed at the wrong place (Content-Range {content_range!r}, "
                f"expected byte {self.done})."
            )
        if complete.isdigit() and self.total is not None and int(complete) != self.total:
            raise WebDownloadError(
                f"{self.final_url} changed while it was downloaded (its size went from {self.total} to "
                f"{complete} bytes)."
            )

    def _read(self, response: http.client.HTTPResponse) -> None:
        write = self.write
        while True:
            if self.should_stop is not None and self.should_stop():
                raise WebDownloadError(f"The download of {self.final_url} was stopped.")
            if time.monotonic() > self.deadline:
                raise WebDownloadError(
                    f"The download of {self.final_url} took longer than {self.limits.total_timeout:.0f} s."
                )
            try:
                chunk = response.read1(CHUNK) if hasattr(response, "read1") else response.read(CHUNK)
            except TimeoutError:
                raise WebDownloadError(
                    f"{self.final_url} sent nothing for {self.limits.idle_timeout:.0f} s "
                    f"(after {self.done} bytes); the download timed out."
                ) from None
            except (OSError, http.client.HTTPException) as err:
                if isinstance(err, http.client.IncompleteRead) and err.partial:
                    self._count(len(err.partial))
                    write(err.partial)
                self._broken(err)
                return  # the connection broke: the caller resumes
            if not chunk:
                return
            self._count(len(chunk))
            write(chunk)

    def _broken(self, err: BaseException) -> None:
        """A broken connection can be resumed only against a known Content-Length."""
        if self.total is None:
            raise WebDownloadError(
                f"The connection to {self.final_url} broke after {self.done} bytes ({_describe(err)}); "
                "without a Content-Length the download cannot be resumed."
            )

    def _count(self, size: int) -> None:
        self.done += size
        if self.done > self.limits.max_bytes:
            raise WebDownloadError(
                f"{self.final_url} sent more than the {self.limits.max_bytes}-byte limit of this registry."
            )
        if self.progress is not None:
            self.progress(self.done, self.total)


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return "the connection timed out"
    if isinstance(err, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(err, ssl.SSLError):
        return f"TLS failed ({err.reason or err})"
    text = str(err) or type(err).__name__
    return text.rstrip(".")
