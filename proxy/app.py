"""The aiohttp application: routes, one middleware (request context, auth, errors), lifecycle."""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.arguments import ArgumentChecker, full_schema_for
from proxy.config import Runtime
from proxy.errors import (
    AuthenticationFailed,
    BodyTooLarge,
    HeadersTooLarge,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ProxyError,
)
from proxy.handler import chat_completions
from proxy.metrics import Metrics
from proxy.observe import observe_noted_chunks
from proxy.policy import Policy
from proxy.record import RequestRecord, log_request
from proxy.shadow import ShadowSender
from proxy.state import RECORD, STATE, ProxyState
from proxy.upstream import Upstreams

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request the client abandoned
# A client's request id is echoed only if it is short and printable (it goes into headers and logs).
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
# Envoy's default cap on a request's headers is 60 KiB. aiohttp caps each header (8190 bytes)
# and their number (128), not their sum, which could approach 1 MiB.
_MAX_HEADER_LINE = 8190  # aiohttp's cap on one header, name and value together
logger = structlog.get_logger("tuned_proxy.app")


def request_id_for(request: web.Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _SAFE_REQUEST_ID.match(given) else request.app[STATE].new_request_id()


def check_header_size(request: web.Request, limit: int) -> None:
    """Refuse a request whose headers add up to more than `limit` bytes (a 431)."""
    headers = request.raw_headers
    if len(headers) * _MAX_HEADER_LINE <= limit:
        return  # too few to add up to the cap: the common case costs one multiplication
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
    if size > limit:
        raise HeadersTooLarge(
            f"The request's headers add up to {size} bytes; at most {limit} are accepted."
        )


def error_response(exc: ProxyError, request_id: str) -> web.Response:
    return web.json_response(
        exc.body(), status=exc.status, headers={**exc.headers(), "x-request-id": request_id}
    )


def _as_proxy_error(exc: web.HTTPException) -> ProxyError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return BodyTooLarge("The request body is too large.")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"Method {exc.method} is not allowed on this path.")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("Unknown path. The proxy serves POST /v1/chat/completions.")
    return InternalError(exc.reason)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id and a record, check its client key, turn every failure into
    an OpenAI error body, and write the request's log line at the end.

    One middleware rather than one per concern: each layer costs every request a coroutine."""
    record = RequestRecord(request_id=request_id_for(request), path=request.path)
    request[RECORD] = record
    structlog.contextvars.bind_contextvars(request_id=record.request_id)
    try:
        runtime = request.app[STATE].runtime
        check_header_size(request, runtime.config.server.max_header_bytes)
        if runtime.client_keys and request.path not in PUBLIC_PATHS:
            authenticate(request, runtime.client_keys)
        response = await handler(request)
    except ProxyError as exc:
        response = error_response(exc, record.request_id)
        record.error = exc.message
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_as_proxy_error(exc), record.request_id)
    except asyncio.CancelledError:
        # The client went away (aiohttp cancels its handler): still count and log it.
        record.client_disconnected = True
        record.status = record.status or CLIENT_CLOSED_REQUEST
        finish(request, record)
        raise
    except Exception as exc:
        logger.exception("unhandled error", path=request.path)
        response = error_response(
            InternalError(f"Internal error in the proxy ({type(exc).__name__})."),
            record.request_id,
        )
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    if not response.prepared:
        response.headers["x-request-id"] = record.request_id
        record.status = response.status
        record.ended = time.perf_counter()  # the client's download is not the proxy's time
        await send_now(request, response, record)
    finish(request, record)
    return response


async def send_now(
    request: web.Request, response: web.StreamResponse, record: RequestRecord
) -> None:
    """Write a whole answer before the record stage: the client does not wait for the
    bookkeeping (aiohttp then finds it sent and only finishes the exchange)."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        record.client_disconnected = True  # aiohttp stops there too; the line still counts it
    except asyncio.CancelledError:
        record.client_disconnected = True
        finish(request, record)
        raise


def finish(request: web.Request, record: RequestRecord) -> None:
    """The record stage: read the noted stream chunks, check answered arguments, count, and
    write the request's log line."""
    if request.path in PUBLIC_PATHS:
        return
    state = request.app[STATE]
    observe_noted_chunks(record)
    if record.argument_check is not None:
        check_arguments(state.arguments, record, *record.argument_check)
    state.metrics.observe_request(record)
    log_request(record)


def record_unparsed(app: web.Application, error: ProxyError) -> str:
    """Count and log a request aiohttp could not parse, which never reaches the middlewares.

    Returns the request id given to it.
    """
    state = app.get(STATE)  # None: a plain app (the mock upstream) run by the same runner
    request_id = state.new_request_id() if state is not None else f"req_{uuid.uuid4().hex}"
    record = RequestRecord(request_id=request_id, path="")
    record.status, record.error = error.status, error.message
    if state is not None:
        state.metrics.observe_request(record)
    log_request(record)
    return record.request_id


def check_arguments(
    checker: ArgumentChecker, record: RequestRecord, policy: Policy, request_tools: Any
) -> None:
    """Count answered calls whose arguments break the full schema (the answer is unchanged)."""
    for function, arguments in record.answered_arguments():
        schema = full_schema_for(policy, request_tools, function)
        kind = checker.check(function, arguments, schema)
        if kind is not None:
            record.argument_errors.append((function, kind))


def key_matches(presented: str, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured key (no early exit)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def presented_key(request: web.Request) -> str:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key", "").strip()


def authenticate(request: web.Request, keys: tuple[str, ...]) -> None:
    """Client keys are checked before routing, so an unknown model without a key is a 401."""
    key = presented_key(request)
    if not key:
        raise AuthenticationFailed(
            "Missing API key: send it as 'Authorization: Bearer KEY' or 'api-key: KEY'."
        )
    if not key_matches(key, keys):
        raise AuthenticationFailed("Incorrect API key provided.")


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[STATE].runtime
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "tuned-proxy"}
        for name in runtime.routes
    ]
    return web.json_response({"object": "list", "data": data})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[STATE].draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ready"})


def add_routes(app: web.Application) -> None:
    chat_paths = (
        "/v1/chat/completions",
        "/chat/completions",
        "/openai/v1/chat/completions",
        "/openai/deployments/{deployment}/chat/completions",
        "/openai/v1/deployments/{deployment}/chat/completions",
    )
    for path in chat_paths:
        app.router.add_post(path, chat_completions)
    for path in ("/v1/models", "/models", "/openai/models", "/openai/v1/models"):
        app.router.add_get(path, list_models)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def build_app(
    runtime: Runtime, upstreams: Upstreams | None = None, registry: CollectorRegistry | None = None
) -> web.Application:
    """The proxy app for a loaded config, with its own upstream session and metrics registry."""
    app = web.Application(
        middlewares=[request_context],
        client_max_size=runtime.config.server.max_body_bytes,
    )
    upstreams = upstreams or Upstreams()
    meters = Metrics(registry)
    shadows = ShadowSender(
        upstreams, runtime.config.server.shadow_max_in_flight, on_outcome=meters.observe_shadow
    )
    state = ProxyState(runtime=runtime, upstreams=upstreams, shadows=shadows, metrics=meters)
    meters.in_flight.set_function(lambda: state.in_flight)
    app[STATE] = state

    async def upstream_session(app: web.Application) -> AsyncIterator[None]:
        await upstreams.start()
        yield
        await shadows.close()
        await upstreams.close()

    app.cleanup_ctx.append(upstream_session)
    add_routes(app)
    return app
