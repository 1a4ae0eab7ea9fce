"""The aiohttp application: routes, one middleware (request context, auth, errors), lifecycle."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.auth import authenticate
from proxy.capture.writer import CaptureWriter
from proxy.config import Runtime
from proxy.errors import (
    SERVER_NAME,
    BodyTooLarge,
    ExpectationFailed,
    HeadersTooLarge,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ProxyError,
    echo,
)
from proxy.handler import chat_completions, responses
from proxy.metrics import Metrics
from proxy.record import RequestRecord
from proxy.recording import record_abandoned, record_request
from proxy.replies import error_response, hand_over
from proxy.shadow import ShadowSender
from proxy.state import RECORD, STATE, ProxyState
from proxy.text_bias import TextBiasResolver
from proxy.upstream import Upstreams

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
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


def _as_proxy_error(exc: web.HTTPException) -> ProxyError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return BodyTooLarge("The request body is too large.")
    return InternalError(exc.reason)


def check_expectation(request: web.Request) -> None:
    """An `Expect` other than `100-continue` is refused (after the key was checked).

    aiohttp would answer it before any middleware runs (`100 Continue` to anyone, or a plain
    417 quoting the header); every route defers to here instead (`defer_expectation`), and the
    body is invited only when the handler reads it (`request.read_body`).
    """
    expect = request.headers.get("Expect")
    if expect is not None and expect.lower() != "100-continue":
        raise ExpectationFailed("The proxy meets no expectation but 100-continue.")


async def defer_expectation(request: web.Request) -> None:
    """Every route's `expect_handler`: nothing before the middleware (see `check_expectation`)."""
    return None


# The handler a route resolved to -> the model API it serves (any other: None).
MODEL_APIS: dict[Handler, str] = {chat_completions: "chat", responses: "responses"}


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What wraps every route: an id and a record for the request, the header cap, the client
    key, the `Expect` header, an OpenAI error body for every failure a handler does not answer
    itself, and the record stage for a request no pipeline recorded (`pipeline.py`).

    One middleware rather than one per concern: each layer costs every request a coroutine."""
    record = RequestRecord(
        request_id=request_id_for(request),
        path=request.path,
        api=MODEL_APIS.get(request.match_info.handler),
    )
    request[RECORD] = record
    state = request.app[STATE]
    structlog.contextvars.bind_contextvars(request_id=record.request_id)
    try:
        runtime = state.runtime
        check_header_size(request, runtime.config.server.max_header_bytes)
        if runtime.client_keys and request.path not in PUBLIC_PATHS:
            authenticate(request, runtime.client_keys)
        if "Expect" in request.headers:
            check_expectation(request)
        response = await handler(request)
    except ProxyError as exc:
        response = error_response(exc, record.request_id)
        record.error = exc.message
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_as_proxy_error(exc), record.request_id)
    except asyncio.CancelledError:
        if request.path not in PUBLIC_PATHS:
            record_abandoned(state, record)
        raise
    except Exception as exc:
        logger.exception("unhandled error", path=request.path)
        response = error_response(
            InternalError(f"Internal error in the proxy ({type(exc).__name__})."),
            record.request_id,
        )
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    if not record.recorded:
        await hand_over(request, response, record)
        if request.path not in PUBLIC_PATHS:
            record_request(state, record)
    return response


async def list_models(request: web.Request) -> web.Response:
    runtime = request.app[STATE].runtime
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "tuned-proxy"}
        for name in runtime.routes
    ]
    return web.json_response({"object": "list", "data": data})


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    reuse_s = state.runtime.config.server.metrics_cache_s
    body, content_type = state.metrics.render_for_scrape(reuse_s)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[STATE].draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ready"})


CHAT_PATHS = (
    "/v1/chat/completions",
    "/chat/completions",
    "/openai/v1/chat/completions",
    "/openai/deployments/{deployment}/chat/completions",
    "/openai/v1/deployments/{deployment}/chat/completions",
)
RESPONSES_PATHS = (
    "/v1/responses",
    "/responses",
    "/openai/v1/responses",
    "/openai/responses",  # AzureOpenAI(azure_endpoint=...) calls this one
)
MODELS_PATHS = ("/v1/models", "/models", "/openai/models", "/openai/v1/models")
# What a 404 lists: the paths an application is meant to use.
SERVED = (
    "POST /v1/chat/completions (Azure: /openai/deployments/{name}/chat/completions), "
    "POST /v1/responses (Azure: /openai/v1/responses), GET /v1/models"
)


async def unknown_path(request: web.Request) -> web.StreamResponse:
    """Every request no route serves: 405 where the path is served for another method, else
    404 naming what is served. A route of its own (not aiohttp's 404) so that its `Expect`
    waits for the middleware too."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not request.match_info.route.resource:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise MethodNotAllowed(
            f"Method {echo(request.method)} is not allowed on this path "
            f"(allowed: {', '.join(sorted(allowed))})."
        )
    raise NotFound(f"Unknown path. The proxy serves {SERVED}.")


def add_routes(app: web.Application, metrics_route: bool = True) -> None:
    def add(method: str, path: str, handler: Handler) -> None:
        app.router.add_route(method, path, handler, expect_handler=defer_expectation)

    for path in CHAT_PATHS:
        add("POST", path, chat_completions)
    for path in RESPONSES_PATHS:
        add("POST", path, responses)
    for path in MODELS_PATHS:
        add("GET", path, list_models)
    if metrics_route:  # else on a listener of its own (`build_metrics_app`)
        add("GET", "/metrics", metrics)
    add("GET", "/healthz", healthz)
    add("GET", "/readyz", readyz)
    add("*", "/{path:.*}", unknown_path)  # last: every other path and method


def build_metrics_app(state: ProxyState) -> web.Application:
    """The app of the metrics listener (`server.metrics_port`): `/metrics` alone, no key."""
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{path:.*}", not_metrics)
    return app


async def not_metrics(request: web.Request) -> web.Response:
    error = NotFound("Only GET /metrics is served on the metrics port.")
    response = error_response(error, request.app[STATE].new_request_id())
    response.headers["Server"] = SERVER_NAME
    return response


def build_app(
    runtime: Runtime,
    upstreams: Upstreams | None = None,
    registry: CollectorRegistry | None = None,
    *,
    metrics_route: bool = True,
) -> web.Application:
    """The proxy app for a loaded config, with its own upstream session and metrics registry."""
    app = web.Application(
        middlewares=[request_context],
        client_max_size=runtime.config.server.max_body_bytes,
    )
    upstreams = upstreams or Upstreams()
    meters = Metrics(registry)
    shadows = ShadowSender(
        upstreams,
        runtime.config.server.shadow_max_in_flight,
        on_outcome=meters.observe_shadow,
        on_agreement=meters.observe_agreement,
    )
    state = ProxyState(
        runtime=runtime,
        upstreams=upstreams,
        shadows=shadows,
        metrics=meters,
        text_bias=TextBiasResolver(upstreams),
        capture=CaptureWriter(
            meters.observe_capture,
            runtime.config.server.capture_queue,
            runtime.config.server.capture_queue_bytes,
        ),
    )
    meters.in_flight.set_function(lambda: state.in_flight)
    app[STATE] = state

    async def upstream_session(app: web.Application) -> AsyncIterator[None]:
        await upstreams.start()
        state.capture.start()
        state.serve(state.runtime)
        yield
        state.text_bias.stop()
        await state.capture.close()  # what was captured before SIGTERM is written
        await shadows.close()
        await state.close_tracing()  # after the shadows: a cancelled copy's span ends first
        await upstreams.close()

    app.cleanup_ctx.append(upstream_session)
    add_routes(app, metrics_route)
    return app
