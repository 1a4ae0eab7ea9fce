"""The one way out to the network: send a chat request to a target's upstream.

`Upstreams` owns the only `aiohttp.ClientSession` of the app (created once, pooled) and knows
each kind's URL and credential form. The `mock` kind answers in process from the fake model,
through the same `UpstreamResponse`, so the relay cannot tell the two apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import yarl

from proxy import __version__, jsonutil
from proxy.cache import BoundedCache
from proxy.config import (
    AzureUpstream,
    CompatibleUpstream,
    MockUpstream,
    OpenAIUpstream,
    Target,
    UpstreamConfig,
)
from proxy.errors import UpstreamTimeout, UpstreamUnreachable, nested_too_deeply

if TYPE_CHECKING:
    from proxy.fake.server import FakeExchange

# Response headers that reach the client unchanged: the SDK's retries depend on them.
PASSTHROUGH_HEADER_PREFIXES = ("x-ratelimit-",)
PASSTHROUGH_HEADERS = frozenset(
    {"retry-after", "retry-after-ms", "x-should-retry", "openai-processing-ms"}
)
UPSTREAM_REQUEST_ID_HEADERS = ("x-request-id", "apim-request-id")
REDACTED = b"[REDACTED]"
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


class UpstreamResponse:
    """An answer whose body has not been read yet; `close` must be called once done.

    Each kind of upstream subclasses it with how its body arrives, is read whole and is let go.
    """

    __slots__ = ("_chunks", "content_type", "headers", "secret", "status", "wait_seconds")

    def __init__(
        self, status: int, headers: dict[str, str], content_type: str, secret: bytes = b""
    ) -> None:
        self.status = status
        self.headers = headers
        self.content_type = content_type
        # The proxy's own credential for this upstream, so that an error body quoting it can
        # be redacted before it reaches a client (`redact`); empty when there is none.
        self.secret = secret
        self.wait_seconds = 0.0  # time spent waiting on the upstream for body bytes
        self._chunks: AsyncIterator[bytes] | None = None

    def redact(self, body: bytes) -> bytes:
        """`body` with every occurrence of the proxy's upstream credential replaced."""
        if self.secret and self.secret in body:
            return body.replace(self.secret, REDACTED)
        return body

    @property
    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (one iterator per answer, made on first use)."""
        if self._chunks is None:
            self._chunks = self._timed(self._body_chunks())
        return self._chunks

    def _body_chunks(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def _read_whole(self, limit: int) -> bytes | None:
        """The body in one read, where the kind can tell it is small enough; else None."""
        return None

    async def close(self) -> None:
        return None

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
        started = time.perf_counter()
        try:
            whole = await self._read_whole(limit)
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


class _HttpAnswer(UpstreamResponse):
    """An aiohttp response from an HTTP upstream."""

    __slots__ = ("_name", "_response")

    def __init__(self, response: aiohttp.ClientResponse, name: str, secret: bytes) -> None:
        super().__init__(
            response.status,
            passthrough_headers(response.headers),
            response.headers.get("Content-Type", ""),
            secret,
        )
        self._response = response
        self._name = name

    def _body_chunks(self) -> AsyncIterator[bytes]:
        return _http_chunks(self._response, self._name)

    async def _read_whole(self, limit: int) -> bytes | None:
        """Only a body whose length is declared, within `limit` and not compressed (a
        compressed body's length says nothing of its size): no chunk-by-chunk loop."""
        response = self._response
        length = response.content_length
        if length is None or length > limit or response.headers.get("Content-Encoding"):
            return None
        with _read_failures(self._name):
            return await response.read()

    async def close(self) -> None:
        # release() keeps a fully read connection for reuse; close() drops a half-read one.
        response = self._response
        if response.content.at_eof():
            response.release()
        else:
            response.close()


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


def responses_url(upstream: UpstreamConfig) -> str:
    """The Responses API URL of an HTTP upstream (the model goes in the body)."""
    if isinstance(upstream, AzureUpstream):
        # Azure serves the Responses API only in its v1 form, whatever `api_version` says.
        base = upstream.base_url.rstrip("/").removesuffix("/openai/v1").removesuffix("/openai")
        return f"{base}/openai/v1/responses"
    if isinstance(upstream, OpenAIUpstream | CompatibleUpstream):
        return upstream.base_url.rstrip("/") + "/responses"
    raise TypeError(f"no URL for upstream kind {upstream.kind}")


def tokenize_url(upstream: UpstreamConfig) -> str:
    """`POST /tokenize` at the server's root: vLLM, SGLang and llama.cpp serve it beside
    `/v1`, not under it."""
    base = str(getattr(upstream, "base_url", "")).rstrip("/").removesuffix("/v1")
    return f"{base}/tokenize"


def api_url(upstream: UpstreamConfig, model: str, api: str) -> str:
    return responses_url(upstream) if api == "responses" else chat_url(upstream, model)


def upstream_key(upstream: UpstreamConfig) -> str:
    """The upstream's key from its environment variable; empty when it has none."""
    env = getattr(upstream, "api_key_env", None)
    return os.environ.get(env, "").strip() if env else ""


def auth_headers(upstream: UpstreamConfig) -> dict[str, str] | None:
    """The upstream's credential header, from its environment variable.

    None means the kind needs a key and none is set.
    """
    if isinstance(upstream, MockUpstream):
        return {}
    key = upstream_key(upstream)
    if not key:
        return {} if isinstance(upstream, CompatibleUpstream) else None
    if isinstance(upstream, AzureUpstream):
        return {"api-key": key}
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """What every request to one upstream and model sends alike: worked out on the first
    request after a (re)load, not on every one."""

    upstream: UpstreamConfig  # held, so that its id, which keys the cache, is not reused
    url: yarl.URL
    headers: dict[str, str]  # all but Accept and X-Request-Id
    timeout: aiohttp.ClientTimeout
    missing_key: str | None  # why no request can be sent (a key the kind needs is unset)
    secret: bytes  # the credential's value, redacted from error bodies (empty: none)


def _endpoint(upstream: UpstreamConfig, upstream_name: str, model: str, api: str) -> _Endpoint:
    credential = auth_headers(upstream)
    missing_key = None
    if credential is None:
        env = getattr(upstream, "api_key_env", "")
        missing_key = (
            f"upstream {upstream_name!r} has no API key: environment variable {env} is not set"
        )
    return _Endpoint(
        upstream=upstream,
        url=yarl.URL(api_url(upstream, model, api)),
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **(credential or {}),
        },
        timeout=aiohttp.ClientTimeout(
            total=upstream.timeout_s,
            connect=upstream.connect_timeout_s,
            sock_read=upstream.idle_timeout_s,
        ),
        missing_key=missing_key,
        secret=upstream_key(upstream).encode(),
    )


# Endpoints kept at most; each reload makes new ones, and the least lately used leave.
MAX_ENDPOINTS = 1024


def _one(key: object, value: object) -> int:
    return 1


class Upstreams:
    """Sends requests to upstreams. Create with `start()`, release with `close()`."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        # Filled from the config, not from traffic: counted in entries, each as one byte.
        self._endpoints: BoundedCache[tuple[int, str, str, str], _Endpoint] = BoundedCache(
            _one, MAX_ENDPOINTS, MAX_ENDPOINTS
        )

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

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The pool's session (None before `start` and after `close`), for leak checks."""
        return self._session

    async def send(
        self,
        target: Target,
        body: dict[str, Any],
        request_id: str,
        api: str = "chat",
        trace_headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        """Send `body` to the target's upstream, at its endpoint of `api` (`chat`, or
        `responses`), with `trace_headers` (`traceparent`) when tracing is on; raise a
        `ProxyError` if no answer starts."""
        if isinstance(target.upstream, MockUpstream):
            serialised(body)  # refused alike, whichever kind the upstream is
            return await _send_mock(body, request_id, api)
        return await self._send_http(target, body, request_id, api, trace_headers)

    def _endpoint_for(self, target: Target, api: str) -> _Endpoint:
        key = (id(target.upstream), target.upstream_name, target.model, api)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = _endpoint(target.upstream, target.upstream_name, target.model, api)
            self._endpoints.put(key, endpoint)
        return endpoint

    async def tokenize(self, target: Target, text: str) -> list[int]:
        """The token ids of `text` in the target's model, from its upstream's tokenizer
        (`POST /tokenize` at the server's root; vLLM and SGLang take the model and a `prompt`,
        llama.cpp a `content`). Raises `UpstreamFailure` when no usable answer comes."""
        assert self._session is not None, "Upstreams.start() was not called"
        upstream = target.upstream
        if isinstance(upstream, MockUpstream):
            raise UpstreamUnreachable(f"upstream {target.upstream_name!r} has no tokenizer")
        url = tokenize_url(upstream)
        body: dict[str, Any] = (
            {"content": text}
            if upstream.server_name == "llama.cpp"
            else {"model": target.model, "prompt": text, "add_special_tokens": False}
        )
        endpoint = self._endpoint_for(target, "chat")  # the credential and timeouts
        try:
            async with self._session.post(
                url,
                json=body,
                headers=endpoint.headers,
                timeout=endpoint.timeout,
                allow_redirects=False,
            ) as response:
                answer = await response.json(content_type=None) if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UpstreamUnreachable(
                f"upstream {target.upstream_name!r} did not tokenize ({type(exc).__name__})"
            ) from exc
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or not all(type(t) is int for t in tokens):
            raise UpstreamUnreachable(
                f"upstream {target.upstream_name!r} gave no token ids at {url}",
                reason="invalid_response",
            )
        return tokens

    async def _send_http(
        self,
        target: Target,
        body: dict[str, Any],
        request_id: str,
        api: str,
        trace_headers: Mapping[str, str] | None,
    ) -> UpstreamResponse:
        assert self._session is not None, "Upstreams.start() was not called"
        endpoint = self._endpoint_for(target, api)
        if endpoint.missing_key is not None:
            raise UpstreamUnreachable(endpoint.missing_key)
        headers = {
            **endpoint.headers,
            "Accept": "text/event-stream" if body.get("stream") else "application/json",
            "X-Request-Id": request_id,
        }
        if trace_headers is not None:
            headers.update(trace_headers)
        try:
            # Redirects are not followed: aiohttp would carry an `api-key` header to whatever
            # origin a redirect names (it drops only `Authorization`). A 3xx is a failure.
            response = await self._session.post(
                endpoint.url,
                data=serialised(body),
                headers=headers,
                timeout=endpoint.timeout,
                allow_redirects=False,
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
        refusal = not_an_answer(response.status, target.upstream_name)
        if refusal is not None:
            response.close()
            raise refusal
        return _HttpAnswer(response, target.upstream_name, endpoint.secret)


def serialised(body: dict[str, Any]) -> bytes:
    """The request body's bytes; a 400 when the client's JSON nests deeper than orjson writes
    (it reads 1024 levels and writes 254), never a 500."""
    try:
        return jsonutil.dumps(body)
    except TypeError as exc:  # from parsed JSON, orjson only refuses to write deep nesting
        raise nested_too_deeply() from exc


def not_an_answer(status: int, name: str) -> UpstreamUnreachable | None:
    """The failure a status stands for when it is not an answer the client can be given: a
    redirect (never followed) or a number outside HTTP's 100-599."""
    if 300 <= status < 400:
        return UpstreamUnreachable(
            f"upstream {name!r} answered with a redirect (HTTP {status}), which the proxy "
            "does not follow",
            reason="invalid_response",
        )
    if not 200 <= status <= 599:
        return UpstreamUnreachable(
            f"upstream {name!r} answered with HTTP status {status}, which is not a final one",
            reason="invalid_response",
        )
    return None


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


class _MockAnswer(UpstreamResponse):
    """An answer of the built-in fake model, made in process."""

    __slots__ = ("_exchange",)

    def __init__(self, exchange: FakeExchange) -> None:
        headers = exchange.headers
        super().__init__(
            exchange.status,
            passthrough_headers(headers),
            headers.get("content-type", headers.get("Content-Type", "")),
        )
        self._exchange = exchange

    async def _body_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._exchange.chunks:
                yield chunk
        except ConnectionResetError as exc:
            raise UpstreamUnreachable(
                "upstream 'mock' broke the connection", reason="broken_stream"
            ) from exc


async def _send_mock(body: dict[str, Any], request_id: str, api: str) -> UpstreamResponse:
    # Imported here: the fake model is only needed by configs that use `kind: mock`.
    from proxy.fake.server import fake_exchange, fake_responses_exchange

    answer = fake_responses_exchange if api == "responses" else fake_exchange
    return _MockAnswer(await answer(body, {"x-request-id": request_id}))
