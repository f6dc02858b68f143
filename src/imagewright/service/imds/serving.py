"""Running the metadata service: one async process, a TCP listener and the forwarders' socket.

``prepare`` makes what must exist before the first request (the channel directory, the
secrets, the identity key) and checks the catalog's schema; ``run`` serves until SIGTERM or
SIGINT. Both listeners are uvicorn servers in one event loop, sharing one ``MetadataService``
(one cache, one token key): uvicorn with httptools and uvloop, ``proxy_headers`` off (see
``app``), no ``Server``/``Date`` work beyond uvicorn's cached date. Signals are handled here, not
by each uvicorn server (they would replace each other's handlers).

The unix socket (``DATA_DIR/metadata/socket/guest.sock``) is created 0600 inside a 0700
directory; a socket file left by a dead service is replaced, a live one is refused in one
sentence (one metadata service per data dir).

When ``imagewright serve --metadata-listen`` starts the service as its child, ``parent_pid``
makes it exit when the registry process is gone, however it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imagewright.catalog.database import Catalog
from imagewright.errors import InvalidArgumentError
from imagewright.metadata.channel import MetadataChannel
from imagewright.service import logs
from imagewright.service.imds.access_log import AccessLog
from imagewright.service.imds.app import MetadataApp, MetadataService
from imagewright.service.imds.cache import InstanceCache
from imagewright.service.imds.config import ACCESS_LOG_OFF, MetadataConfig
from imagewright.service.imds.signing import load_signer
from imagewright.service.imds.tokens import SessionTokens

LOG = logging.getLogger("imagewright.metadata")


def prepare(config: MetadataConfig) -> MetadataChannel:
    """The catalog checked (not changed); then the data dir's metadata files, made if missing.

    In this order, so that a service refused for its catalog leaves no keys behind.
    """
    catalog = Catalog(config.database_url)
    try:
        catalog.check_schema()
    finally:
        catalog.dispose()
    channel = MetadataChannel.for_data_dir(config.data_dir)
    channel.ensure_directory()
    channel.proxy_secret()
    channel.token_key()
    load_signer(channel)
    return channel


def access_log_target(config: MetadataConfig, channel: MetadataChannel) -> str | None:
    if config.access_log == ACCESS_LOG_OFF:
        return None
    return config.access_log or str(channel.access_log_path)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def bind_unix_socket(path: Path) -> socket.socket:
    if path.exists() or path.is_symlink():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left by a service that is gone
            else:
                raise InvalidArgumentError(f"Another metadata service is listening on {path}.")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _umask(0o177):
        sock.bind(str(path))
    sock.listen(1024)
    return sock


def bind_tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise InvalidArgumentError(
            f"The metadata service cannot listen on {host}:{port}: {err.strerror}."
        ) from None
    sock.listen(2048)
    return sock


@dataclass
class _Listener:
    app: MetadataApp
    sock: socket.socket


#: The largest request head (request line and headers) the service reads; IMDS requests are tiny.
MAX_REQUEST_HEAD_BYTES = 32 * 1024


def _bounded_protocol() -> type:
    """uvicorn's httptools protocol with a bound on the request head.

    llhttp (through httptools) keeps a header value in memory until it is complete, with no
    limit: a client could send one endless header. Here the bytes a connection sends between two
    completed request heads are counted, and beyond ``MAX_REQUEST_HEAD_BYTES`` the connection is
    answered 431 and closed.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0

        def data_received(self, data: bytes) -> None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                    b"content-length: 0\r\nconnection: close\r\n\r\n"
                )
                self.transport.close()
                return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._head_bytes = 0
            super().on_headers_complete()

    return BoundedHttpToolsProtocol


def _server(listener: _Listener) -> object:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # run() handles the signals for every server of the process

    config = uvicorn.Config(
        listener.app,
        loop="none",
        http=_bounded_protocol(),
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level="warning",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )
    return Server(config)


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    LOG.warning("the process that started the metadata service is gone; stopping")
    stop.set()


def bind_sockets(config: MetadataConfig, channel: MetadataChannel) -> list[socket.socket]:
    """The forwarders' unix socket, then the TCP listener (when configured)."""
    sockets = [bind_unix_socket(channel.socket_path)]
    if config.listen is not None:
        try:
            sockets.append(bind_tcp_socket(*config.listen))
        except InvalidArgumentError:
            sockets[0].close()
            channel.socket_path.unlink(missing_ok=True)
            raise
    return sockets


async def serve(config: MetadataConfig, channel: MetadataChannel, sockets: list[socket.socket]) -> None:
    catalog = Catalog(config.database_url)
    access_log = AccessLog(access_log_target(config, channel))
    cache = InstanceCache(catalog, load_signer(channel), config.region)
    service = MetadataService(
        cache,
        SessionTokens(channel.token_key()),
        channel.proxy_secret(),
        access_log,
        trusted_proxies=config.trusted_proxies,
        rate_limit=config.rate_limit,
    )
    await cache.check()
    listeners = [
        _Listener(MetadataApp(service, forwarder_channel=sock.family == socket.AF_UNIX), sock)
        for sock in sockets
    ]
    servers = [_server(listener) for listener in listeners]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    background = [
        asyncio.create_task(cache.watch(config.cache_check_seconds)),
        asyncio.create_task(access_log.flusher()),
    ]
    if config.parent_pid is not None:
        background.append(asyncio.create_task(_watch_parent(config.parent_pid, stop)))
    serving = [
        asyncio.create_task(server.serve(sockets=[listener.sock]))  # type: ignore[attr-defined]
        for server, listener in zip(servers, listeners, strict=True)
    ]
    for task in serving:
        task.add_done_callback(lambda _task: stop.set())
    LOG.info(
        "serving instance metadata on %s; access log: %s",
        " and ".join(_where(sock) for sock in sockets),
        access_log_target(config, channel) or "off",
    )
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.should_exit = True  # type: ignore[attr-defined]
        await asyncio.gather(*serving, return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        access_log.close()
        with contextlib.suppress(OSError):
            channel.socket_path.unlink()
        catalog.dispose()
        LOG.info("the metadata service stopped")


def _where(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return str(sock.getsockname())
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def run(
    config: MetadataConfig,
    *,
    prepared: MetadataChannel | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (uvloop's event loop)."""
    import uvloop

    channel = prepared or prepare(config)
    # Here, not only in the CLI: the child ``imagewright serve`` starts is a fresh interpreter.
    logs.configure(config.log_level)
    uvloop.run(serve(config, channel, sockets if sockets is not None else bind_sockets(config, channel)))


def _child(config_json: str, sockets: list[socket.socket]) -> None:
    config = MetadataConfig.from_json(config_json)
    with contextlib.suppress(KeyboardInterrupt):
        run(config, prepared=MetadataChannel.for_data_dir(config.data_dir), sockets=sockets)


def start_child(config: MetadataConfig) -> multiprocessing.process.BaseProcess:
    """The service as a child of this process (``imagewright serve --metadata-listen``).

    The sockets are bound here first, so a busy port fails the command in one sentence, and
    requests that arrive before the child runs wait in the listen queue.
    """
    channel = prepare(config)
    sockets = bind_sockets(config, channel)
    child_config = dataclasses.replace(config, parent_pid=os.getpid())
    process = multiprocessing.get_context("spawn").Process(
        target=_child, args=(child_config.to_json(), sockets), name="imagewright-metadata", daemon=False
    )
    process.start()
    for sock in sockets:
        sock.close()
    return process


def stop_child(process: multiprocessing.process.BaseProcess) -> None:
    if process.is_alive():
        process.terminate()
        process.join(10)
    if process.is_alive():
        process.kill()
        process.join()
