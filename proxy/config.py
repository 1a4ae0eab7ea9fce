"""The config file: its shape (pydantic, strict) and the linked runtime view of it.

Loading has two phases, and both run at start-up or reload, never per request:
1. `parse_config`: the YAML's shape; unknown keys are errors.
2. `link_config`: cross-references — routes name existing upstreams and policies, weights are ≥ 0
   with a positive sum, policy files load — into a `Runtime` the request path reads directly.
Every problem comes back at once as `file: field.path: message` lines (`ConfigError`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from proxy.errors import ConfigError, validation_messages
from proxy.policies import load_policy
from proxy.request import BodyLimits
from proxy.rewrite.capabilities import SERVER_CAPABILITIES, Capabilities, Server
from proxy.rewrite.policy import PASSTHROUGH, Policy
from proxy.yamlfile import read_yaml_mapping

STICKY_PATTERN = re.compile(
    r"^(header:[A-Za-z0-9!#$%&'*+.^_`|~-]+|body:(user|safety_identifier|prompt_cache_key))$"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    shadow_max_in_flight: int = Field(32, ge=0, description="beyond it, shadow copies are dropped")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="SIGTERM: time left to in-flight requests"
    )
    max_in_flight: int = Field(
        1024, gt=0, description="chat requests served at once; beyond it 503 at once, no queue"
    )
    body_timeout_s: float = Field(30.0, gt=0, description="longest time to receive a request body")
    # A parsed JSON value costs ~100 B of memory: 100,000 of them ~10 MB, and a few ms to parse.
    max_json_elements: int = Field(
        100_000, gt=0, description="JSON values one request body may hold; beyond it 400"
    )
    max_tools: int = Field(
        128, gt=0, description="tools (or legacy functions) one request may offer; beyond it 400"
    )
    max_bytes_in_flight: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="memory request bodies may hold at once (their bytes and ~100 B per JSON "
        "value); beyond it 503",
    )
    max_header_bytes: int = Field(
        64 * 1024, gt=0, description="all request headers together; beyond it 431"
    )
    # 75 s as nginx; longer than clients' own pools keep idle connections (the `openai` SDK
    # lets them go after 5 s), so a kept-alive connection is not cut under a client's feet.
    client_idle_timeout_s: float = Field(
        75.0, gt=0, description="a client connection that sends no request for this long closes"
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="serve /metrics on a listener of its own (and not on the main port)",
    )
    metrics_host: str = Field("127.0.0.1", description="the metrics listener's address")
    # Prometheus scrapes every 15-60 s: a rendering a second old is as good, and costs nothing.
    metrics_cache_s: float = Field(
        1.0, ge=0, description="a /metrics rendering is served again for this long"
    )
    # A captured exchange holds its request and answer until written (~3x the body's bytes).
    capture_queue: int = Field(
        1024, gt=0, description="captured exchanges waiting to be written; beyond it dropped"
    )
    capture_queue_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="memory the waiting captured exchanges may hold; beyond it dropped",
    )
    # uvloop's loop takes 1-7 % off the CPU per request (docs/performance.md); `asyncio` is
    # there for debugging and for platforms without uvloop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="auto: uvloop where it is installed, else asyncio's own loop"
    )

    @model_validator(mode="after")
    def _one_body_fits_in_flight(self) -> ServerConfig:
        if self.max_bytes_in_flight < self.max_body_bytes:
            raise ValueError(
                "max_bytes_in_flight is smaller than max_body_bytes: no large body could be served"
            )
        return self


class CapabilitiesConfig(_Strict):
    """Overrides of the levers the upstream's `server` is known to honour (None: as known)."""

    named_tool_choice: StrictBool | None = None
    tool_choice_required: StrictBool | None = None
    logit_bias: StrictBool | None = None
    parallel_tool_calls: StrictBool | None = None
    strict: StrictBool | None = None
    stream_usage: StrictBool | None = None
    tokenize: StrictBool | None = None


# The server an upstream kind is, unless it says: `compatible` servers differ, so "other"
# (OpenAI's levers) until the operator names one.
_KIND_SERVER = {"openai": "openai", "azure": "azure", "compatible": "other", "mock": "mock"}


class _UpstreamBase(_Strict):
    timeout_s: float = Field(300.0, gt=0, description="deadline for the whole exchange")
    connect_timeout_s: float = Field(10.0, gt=0)
    idle_timeout_s: float = Field(
        60.0, gt=0, description="longest wait for the next bytes (first byte included)"
    )
    server: Server | None = Field(
        None, description="the server software, which sets its known capabilities"
    )
    capabilities: CapabilitiesConfig = CapabilitiesConfig()
    # Kept from before `capabilities`: the same as `capabilities.stream_usage`.
    stream_usage: bool | None = Field(
        None, description="ask streams for their usage chunk (servers without stream_options: off)"
    )
    responses: Literal["native", "bridge"] | None = Field(
        None,
        description="how Responses API requests reach it: its own /responses (native), or "
        "translated to chat completions (bridge); default native for openai, azure and mock, "
        "bridge for compatible",
    )

    @property
    def server_name(self) -> str:
        kind: str = getattr(self, "kind")  # noqa: B009 (each subclass has one)
        return self.server or _KIND_SERVER[kind]

    def effective_capabilities(self) -> Capabilities:
        """The server's known capabilities, with the config's overrides."""
        known = SERVER_CAPABILITIES[self.server_name]
        legacy = known.with_overrides(stream_usage=self.stream_usage)
        return legacy.with_overrides(**self.capabilities.model_dump())

    @property
    def responses_mode(self) -> Literal["native", "bridge"]:
        if self.responses is not None:
            return self.responses
        return "bridge" if isinstance(self, CompatibleUpstream) else "native"


class OpenAIUpstream(_UpstreamBase):
    kind: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"


class AzureUpstream(_UpstreamBase):
    kind: Literal["azure"]
    base_url: str
    api_key_env: str = "AZURE_OPENAI_API_KEY"
    api_version: str | None = None


class CompatibleUpstream(_UpstreamBase):
    kind: Literal["compatible"]
    base_url: str
    api_key_env: str | None = None


class MockUpstream(_UpstreamBase):
    kind: Literal["mock"]


UpstreamConfig = Annotated[
    OpenAIUpstream | AzureUpstream | CompatibleUpstream | MockUpstream,
    Field(discriminator="kind"),
]


class TargetConfig(_Strict):
    """Where a request can go: an upstream, the model name there, and the policy to apply."""

    name: str | None = None
    upstream: str
    model: str
    policy: str | None = None


class VariantConfig(TargetConfig):
    name: str
    weight: float = Field(1.0, ge=0)


class ShadowConfig(TargetConfig):
    sample: float = Field(1.0, ge=0, le=1)
    compare: Literal["tool_calls"] | None = Field(
        None, description="compare the served answer's tool calls with the shadow's"
    )


class CaptureConfig(_Strict):
    """A route's capture of live exchanges as chat fine-tuning examples (distillation)."""

    dir: str = Field(description="where the capture files go (relative to the config file)")
    sample: float = Field(1.0, ge=0, le=1)
    policy: str | None = Field(
        None, description="the policy whose served tools the examples carry (the student's)"
    )
    redact: list[str] = Field([], description="regexes; each match in every string is replaced")
    max_file_mb: float = Field(100.0, gt=0, description="a file past this size is closed")
    variants: list[str] | None = Field(
        None, description="the variants whose answers are captured (default: every variant)"
    )

    @pydantic.field_validator("redact")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact[{index}] is not a regular expression: {exc}") from exc
        return patterns


class RouteConfig(_Strict):
    sticky: str | None = Field(None, pattern=STICKY_PATTERN.pattern)
    allow_variant_override: bool = False
    variants: list[VariantConfig] = Field(min_length=1)
    fallback: list[TargetConfig] = []
    shadow: ShadowConfig | None = None
    capture: CaptureConfig | None = None


# Where an OTLP/HTTP collector takes traces when the endpoint names no path (OTLP's own default).
OTLP_TRACES_PATH = "/v1/traces"


class TracingConfig(_Strict):
    """OpenTelemetry traces (docs/tracing.md): off unless `otlp_endpoint` is set."""

    otlp_endpoint: str | None = Field(
        None,
        description="the collector's OTLP/HTTP traces URL (http://collector:4318/v1/traces; "
        "one without a path gets /v1/traces); unset: no tracing, at no cost",
    )
    sample: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of new traces recorded; a client's traceparent decides for its own",
    )
    service_name: str = Field("tuned-proxy", min_length=1, description="the spans' service.name")

    @field_validator("otlp_endpoint")
    @classmethod
    def _traces_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.path in ("", "/"):
            return parts._replace(path=OTLP_TRACES_PATH).geturl()
        return parts.geturl()

    @property
    def enabled(self) -> bool:
        return self.otlp_endpoint is not None


class ProxyConfig(_Strict):
    server: ServerConfig = ServerConfig()
    tracing: TracingConfig = TracingConfig()
    client_keys_env: str | None = None
    policies_dir: str = "policies"
    upstreams: dict[str, UpstreamConfig]
    routes: dict[str, RouteConfig]


# ----------------------------------------------------------------------------- linked view


@dataclass(frozen=True)
class Target:
    """A resolved destination: everything the request path needs, no look-ups left."""

    name: str
    upstream_name: str
    upstream: UpstreamConfig
    model: str
    policy: Policy
    weight: float = 0.0
    sample: float = 0.0
    compare: str | None = None  # a shadow's comparison with the served answer


@dataclass(frozen=True)
class Capture:
    """A route's capture, resolved: its folder, policy and patterns."""

    route: str
    dir: Path
    sample: float
    policy: Policy | None
    redact: tuple[re.Pattern[str], ...]
    max_file_bytes: int
    variants: frozenset[str]  # the variants whose answers are written


@dataclass(frozen=True)
class Route:
    name: str
    variants: tuple[Target, ...]
    sticky: str | None
    allow_variant_override: bool
    fallback: tuple[Target, ...] = ()
    shadow: Target | None = None
    capture: Capture | None = None

    def variant(self, name: str) -> Target | None:
        return next((v for v in self.variants if v.name == name), None)

    @property
    def targets(self) -> tuple[Target, ...]:
        """Every target the route may send to: its variants, its fallbacks, its shadow."""
        shadow = (self.shadow,) if self.shadow is not None else ()
        return (*self.variants, *self.fallback, *shadow)


@dataclass(frozen=True)
class Runtime:
    """One loaded config: what a request is served with from start to end (reload swaps it)."""

    path: str
    config: ProxyConfig
    routes: dict[str, Route]
    policies: dict[str, Policy] = field(default_factory=dict)
    # Read from the environment once per load (not per request).
    client_keys: tuple[str, ...] = ()

    @cached_property
    def body_limits(self) -> BodyLimits:
        server = self.config.server
        return BodyLimits(server.max_json_elements, server.max_tools)


def read_client_keys(config: ProxyConfig) -> tuple[str, ...]:
    if not config.client_keys_env:
        return ()
    raw = os.environ.get(config.client_keys_env, "")
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def parse_config(path: Path) -> ProxyConfig:
    """Phase 1: the file's shape."""
    raw = read_yaml_mapping(path, "the config")
    try:
        return ProxyConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(validation_messages(str(path), exc)) from exc


class _Linker:
    """Phase 2: resolve names across the config, collecting every error before failing."""

    def __init__(self, path: Path, config: ProxyConfig):
        self.file = str(path)
        self.config = config
        self.policies_dir = (path.parent / config.policies_dir).resolve()
        self.policies: dict[str, Policy] = {"passthrough": PASSTHROUGH}
        # Each policy as served on each kind of server, made once and shared by the targets.
        self.served: dict[tuple[str, Capabilities], Policy] = {}
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{self.file}: {where}: {message}")

    def policy(self, name: str | None, where: str) -> Policy:
        if name is None:
            return PASSTHROUGH
        if name in self.policies:
            return self.policies[name]
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            self.error(where, f"invalid policy name {name!r}")
            return PASSTHROUGH
        policy_path = self.policies_dir / f"{name}.yaml"
        if not policy_path.is_file():
            self.error(where, f"policy {name!r} not found (no file {name}.yaml in policies_dir)")
            return PASSTHROUGH
        try:
            self.policies[name] = load_policy(policy_path, name)
        except ConfigError as exc:
            self.errors.extend(exc.errors)
            return PASSTHROUGH
        return self.policies[name]

    def target(self, spec: TargetConfig, where: str, default_name: str) -> Target:
        upstream = self.config.upstreams.get(spec.upstream)
        if upstream is None:
            known = ", ".join(sorted(self.config.upstreams)) or "none"
            self.error(f"{where}.upstream", f"unknown upstream {spec.upstream!r} (known: {known})")
            upstream = MockUpstream(kind="mock")
        policy = self.policy(spec.policy, f"{where}.policy")
        capabilities = upstream.effective_capabilities()
        served = self.served.setdefault(
            (policy.name, capabilities), policy.serving_on(capabilities)
        )
        bias = policy.spec.logit_bias
        if bias is not None and bias.text and not capabilities.tokenize:
            self.error(
                f"{where}.policy",
                f"policy {policy.name!r} biases by text (logit_bias.text), which needs the "
                f"upstream's tokenizer; upstream {spec.upstream!r} (server "
                f"{upstream.server_name}) has none: bias by token id, or set "
                "capabilities.tokenize: true if it serves POST /tokenize",
            )
        return Target(
            name=spec.name or default_name,
            upstream_name=spec.upstream,
            upstream=upstream,
            model=spec.model,
            policy=served,
            weight=spec.weight if isinstance(spec, VariantConfig) else 0.0,
            sample=spec.sample if isinstance(spec, ShadowConfig) else 0.0,
            compare=spec.compare if isinstance(spec, ShadowConfig) else None,
        )

    def capture(self, route: str, spec: CaptureConfig, variants: tuple[Target, ...]) -> Capture:
        where = f"routes.{route}.capture"
        names = {variant.name for variant in variants}
        for unknown in sorted(set(spec.variants or ()) - names):
            self.error(f"{where}.variants", f"unknown variant {unknown!r}")
        return Capture(
            route=route,
            dir=(Path(self.file).parent / spec.dir).resolve(),
            sample=spec.sample,
            policy=self.policy(spec.policy, f"{where}.policy") if spec.policy else None,
            redact=tuple(re.compile(pattern) for pattern in spec.redact),
            max_file_bytes=int(spec.max_file_mb * 1024 * 1024),
            variants=frozenset(spec.variants) if spec.variants is not None else frozenset(names),
        )

    def route(self, name: str, spec: RouteConfig) -> Route:
        where = f"routes.{name}"
        variants = tuple(
            self.target(v, f"{where}.variants.{i}", v.name) for i, v in enumerate(spec.variants)
        )
        names = [v.name for v in variants]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            self.error(f"{where}.variants", f"variant name {dup!r} is used twice")
        if sum(v.weight for v in variants) <= 0:
            self.error(f"{where}.variants", "weights must have a positive sum")
        fallback = tuple(
            self.target(t, f"{where}.fallback.{i}", f"fallback-{i + 1}")
            for i, t in enumerate(spec.fallback)
        )
        shadow = None
        if spec.shadow is not None:
            shadow = self.target(spec.shadow, f"{where}.shadow", "shadow")
        capture = None
        if spec.capture is not None:
            capture = self.capture(name, spec.capture, variants)
        return Route(
            name=name,
            variants=variants,
            sticky=spec.sticky,
            allow_variant_override=spec.allow_variant_override,
            fallback=fallback,
            shadow=shadow,
            capture=capture,
        )

    def link(self) -> Runtime:
        routes = {name: self.route(name, spec) for name, spec in self.config.routes.items()}
        if not routes:
            self.error("routes", "at least one route is needed")
        if self.errors:
            raise ConfigError(self.errors)
        return Runtime(
            path=self.file,
            config=self.config,
            routes=routes,
            policies=self.policies,
            client_keys=read_client_keys(self.config),
        )


def link_config(path: Path, config: ProxyConfig) -> Runtime:
    return _Linker(path, config).link()


def load_config(path: Path) -> Runtime:
    """Both phases: a `Runtime` ready to serve, or `ConfigError` with every problem found."""
    return link_config(path, parse_config(path))


def examples_dir() -> Path:
    """The example policies: inside the wheel when installed, `policies/` in a source checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "examples"
    return installed if installed.is_dir() else package.parent / "policies"


def default_config_path() -> Path:
    """`tuned-proxy.yaml` in the working directory, else the built-in demo config."""
    local = Path("tuned-proxy.yaml")
    return local if local.is_file() else examples_dir() / "tuned-proxy.example.yaml"
