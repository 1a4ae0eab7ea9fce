"""The one way out to the network: send a chat request to a target's upstream.

`Upstreams` owns the only `aiohttp.ClientSession` of the app (created once, pooled) and knows
each kind's URL and credential form. The `mock` kind answers in process from the fake model,
through the same `UpstreamResponse`, so the relay cannot tell the two apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from proxy import __version__, jsonutil
from proxy.config import (
    AzureUpstream,
    CompatibleUpstream,
    MockUpstream,
    OpenAIUpstream,
    Target,
    UpstreamConfig,
)
from proxy.errors import UpstreamTimeout, UpstreamUnreachable

# Response headers that reach the client unchanged: the SDK's retries depend on them.
PASSTHROUGH_HEADER_PREFIXES = ("x-ratelimit-",)
PASSTHROUGH_HEADERS = frozenset(
    {"retry-after", "retry-after-ms", "x-should-retry", "openai-processing-ms"}
)
UPSTREAM_REQUEST_ID_HEADERS = ("x-request-id", "apim-request-id")
USER_AGENT = f"tuned-proxy/{__version__}"


def passthrough_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream headers a client may see (a safe list: never cookies or auth)."""
    kept = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in PASSTHROUGH_HEADERS or lower.startswith(PASSTHROUGH_HEADER_PREFIXES):
            kept[lower] = value
    for name in UPSTREAM_REQUEST_ID_HEADERS:
        if name in headers:
            kept["x-upstream-request-id"] = headers[name]
            break
    return kept


@dataclass
class UpstreamResponse:
    """An answer whose body has not been read yet; `close` must be called once done."""

    status: int
    headers: dict[str, str]
    content_type: str
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]
    # Reads a body of known, small enough length in one go (None: not such a body).
    read_whole: Callable[[int], Awaitable[bytes | None]] | None = None
    wait_seconds: float = 0.0  # time spent waiting on the upstream for body bytes

    def __post_init__(self) -> None:
        self.chunks = self._timed(self.chunks)

    async def _timed(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        iterator = aiter(chunks)
        while True:
            started = time.perf_counter()
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            finally:
                self.wait_seconds += time.perf_counter() - started
            yield chunk

    async def read(self, limit: int) -> bytes:
        if self.read_whole is not None:
            started = time.perf_counter()
            try:
                whole = await self.read_whole(limit)
            finally:
                self.wait_seconds += time.perf_counter() - started
            if whole is not None:
                return whole
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks:
            size += len(chunk)
            if size > limit:
                raise UpstreamUnreachable(
                    f"The upstream's answer is larger than {limit} bytes.",
                    reason="invalid_response",
                )
            parts.append(chunk)
        return b"".join(parts)


def chat_url(upstream: UpstreamConfig, model: str) -> str:
    """The chat-completions URL of an HTTP upstream for one model (deployment)."""
    if isinstance(upstream, AzureUpstream):
        base = upstream.base_url.rstrip("/").removesuffix("/openai/v1").removesuffix("/openai")
        if upstream.api_version:
            deployment = quote(model, safe="")
            return (
                f"{base}/openai/deployments/{deployment}/chat/completions"
                f"?api-version={quote(upstream.api_version, safe='')}"
            )
        return f"{base}/openai/v1/chat/completions"
    if isinstance(upstream, OpenAIUpstream | CompatibleUpstream):
        return upstream.base_url.rstrip("/") + "/chat/completions"
    raise TypeError(f"no URL for upstream kind {upstream.kind}")


def auth_headers(upstream: UpstreamConfig) -> dict[str, str] | None:
    """The upstream's credential header, from its environment variable.

    None means the kind needs a key and none is set.
    """
    if isinstance(upstream, MockUpstream):
        return {}
    env = upstream.api_key_env
    key = os.environ.get(env, "").strip() if env else ""
    if not key:
        return {} if isinstance(upstream, CompatibleUpstream) else None
    if isinstance(upstream, AzureUpstream):
        return {"api-key": key}
    return {"Authorization": f"Bearer {key}"}


class Upstreams:
    """Sends requests to upstreams. Create with `start()`, release with `close()`."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=True,
            raise_for_status=False,
            # One session serves every client: an upstream's cookie (a load balancer's
            # affinity, say) must not be kept and sent on other clients' requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def connection_counts(self) -> tuple[int, int]:
        """(in use, idle) connections of the pool, for leak checks; never on the request path.

        aiohttp keeps no public count, so this reads its connector's own bookkeeping.
        """
        if self._session is None:
            return 0, 0
        connector = self._session.connector
        if not isinstance(connector, aiohttp.BaseConnector):
            return 0, 0
        idle = sum(len(pool) for pool in connector._conns.values())
        return len(connector._acquired), idle

    async def send(self, target: Target, body: dict[str, Any], request_id: str) -> UpstreamResponse:
        """Send `body` to the target's upstream; raise a `ProxyError` if no answer starts."""
        if isinstance(target.upstream, MockUpstream):
            return await _send_mock(body, request_id)
        return await self._send_http(target, body, request_id)

    async def _send_http(
        self, target: Target, body: dict[str, Any], request_id: str
    ) -> UpstreamResponse:
        assert self._session is not None, "Upstreams.start() was not called"
        upstream = target.upstream
        credential = auth_headers(upstream)
        if credential is None:
            env = getattr(upstream, "api_key_env", "")
            raise UpstreamUnreachable(
                f"upstream {target.upstream_name!r} has no API key: "
                f"environment variable {env} is not set"
            )
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if body.get("stream") else "application/json",
            "User-Agent": USER_AGENT,
            "X-Request-Id": request_id,
            **credential,
        }
        timeout = aiohttp.ClientTimeout(
            total=upstream.timeout_s,
            connect=upstream.connect_timeout_s,
            sock_read=upstream.idle_timeout_s,
        )
        try:
            response = await self._session.post(
                chat_url(upstream, target.model),
                data=jsonutil.dumps(body),
                headers=headers,
                timeout=timeout,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream {target.upstream_name!r} timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(
                f"upstream {target.upstream_name!r} is unreachable ({type(exc).__name__})"
            ) from exc
        except aiohttp.ClientError as exc:
            # Connected, then closed or reset before a status line arrived.
            raise UpstreamUnreachable(
                f"upstream {target.upstream_name!r} closed the connection before answering "
                f"({type(exc).__name__})",
                reason="disconnected",
            ) from exc
        return UpstreamResponse(
            status=response.status,
            headers=passthrough_headers(response.headers),
            content_type=response.headers.get("Content-Type", ""),
            chunks=_http_chunks(response, target.upstream_name),
            close=_closer(response),
            read_whole=_whole_reader(response, target.upstream_name),
        )


def _closer(response: aiohttp.ClientResponse) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        # release() keeps a fully read connection for reuse; close() drops a half-read one.
        if response.content.at_eof():
            response.release()
        else:
            response.close()

    return close


def _whole_reader(
    response: aiohttp.ClientResponse, name: str
) -> Callable[[int], Awaitable[bytes | None]]:
    async def read_whole(limit: int) -> bytes | None:
        """The body in one read when its length is declared, within `limit` and not compressed
        (a compressed body's length says nothing of its size): no chunk-by-chunk loop."""
        length = response.content_length
        if length is None or length > limit or response.headers.get("Content-Encoding"):
            return None
        with _read_failures(name):
            return await response.read()

    return read_whole


async def _http_chunks(response: aiohttp.ClientResponse, name: str) -> AsyncIterator[bytes]:
    """The body as it arrives, with transport failures turned into `ProxyError`s."""
    with _read_failures(name):
        async for chunk in response.content.iter_any():
            yield chunk


@contextmanager
def _read_failures(name: str) -> Iterator[None]:
    """Transport failures while an answer's body is read, as the upstream's `ProxyError`s."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamTimeout(
            f"upstream {name!r} stopped sending its answer (idle or total timeout)"
        ) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(
            f"upstream {name!r} broke the connection ({type(exc).__name__})",
            reason="broken_stream",
        ) from exc


async def _send_mock(body: dict[str, Any], request_id: str) -> UpstreamResponse:
    # Imported here: the fake model is only needed by configs that use `kind: mock`.
    from proxy.mock_server import fake_exchange

    exchange = await fake_exchange(body, {"x-request-id": request_id})

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in exchange.chunks:
                yield chunk
        except ConnectionResetError as exc:
            raise UpstreamUnreachable(
                "upstream 'mock' broke the connection", reason="broken_stream"
            ) from exc

    async def close() -> None:
        return None

    return UpstreamResponse(
        status=exchange.status,
        headers=passthrough_headers(exchange.headers),
        content_type=exchange.headers.get("content-type", exchange.headers.get("Content-Type", "")),
        chunks=chunks(),
        close=close,
    )
