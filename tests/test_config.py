"""Config loading: shape, then cross-references; errors as `file: field.path: message`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.checking import describe_tracing
from proxy.cli import main
from proxy.config import AzureUpstream, load_config
from proxy.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "tuned-proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def good() -> dict[str, Any]:
    return {
        "policies_dir": str(REPO / "policies"),
        "upstreams": {
            "az": {
                "kind": "azure",
                "base_url": "https://x.openai.azure.com",
                "api_version": "2024-10-21",
            },
            "local": {"kind": "mock"},
        },
        "routes": {
            "support": {
                "sticky": "header:x-user-id",
                "variants": [
                    {
                        "name": "full",
                        "upstream": "az",
                        "model": "ft-full",
                        "policy": "support-full",
                        "weight": 90,
                    },
                    {
                        "name": "slim",
                        "upstream": "az",
                        "model": "ft-slim",
                        "policy": "support-slim",
                        "weight": 10,
                    },
                ],
                "fallback": [{"upstream": "local", "model": "base"}],
                "shadow": {"upstream": "local", "model": "next", "sample": 0.05},
            }
        },
    }


def errors_of(tmp_path: Path, config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, config))
    return info.value.errors


def test_good_config_links_routes_upstreams_and_policies(tmp_path: Path) -> None:
    runtime = load_config(write(tmp_path, good()))
    route = runtime.routes["support"]
    assert [v.name for v in route.variants] == ["full", "slim"]
    assert isinstance(route.variants[0].upstream, AzureUpstream)
    assert route.variants[0].policy.name == "support-full"
    assert route.fallback[0].policy.name == "passthrough"
    assert route.shadow is not None
    assert route.shadow.sample == 0.05
    assert set(runtime.policies) >= {"support-full", "support-slim"}


def test_unknown_keys_are_errors_with_their_path(tmp_path: Path) -> None:
    config = good()
    config["routes"]["support"]["variants"][0]["wieght"] = 3
    config["serverr"] = {}
    path = write(tmp_path, config)
    errors = errors_of(tmp_path, config)
    assert f"{path}: routes.support.variants.0.wieght: unknown key" in errors
    assert f"{path}: serverr: unknown key" in errors


def test_cross_reference_errors_are_all_reported(tmp_path: Path) -> None:
    config = good()
    variants = config["routes"]["support"]["variants"]
    variants[0]["upstream"] = "nowhere"
    variants[1]["policy"] = "no-such-policy"
    config["routes"]["support"]["fallback"][0]["upstream"] = "gone"
    path = write(tmp_path, config)
    errors = errors_of(tmp_path, config)
    assert any(
        e.startswith(f"{path}: routes.support.variants.0.upstream: unknown upstream 'nowhere'")
        for e in errors
    )
    assert any(
        e.startswith(f"{path}: routes.support.variants.1.policy: policy 'no-such-policy' not found")
        for e in errors
    )
    assert any(
        e.startswith(f"{path}: routes.support.fallback.0.upstream: unknown upstream 'gone'")
        for e in errors
    )


def test_weights_must_be_non_negative_with_positive_sum(tmp_path: Path) -> None:
    config = good()
    for variant in config["routes"]["support"]["variants"]:
        variant["weight"] = 0
    path = write(tmp_path, config)
    assert f"{path}: routes.support.variants: weights must have a positive sum" in errors_of(
        tmp_path, config
    )
    config["routes"]["support"]["variants"][0]["weight"] = -1
    assert any("routes.support.variants.0.weight" in e for e in errors_of(tmp_path, config))


def test_bad_sticky_kind_and_duplicate_variants(tmp_path: Path) -> None:
    config = good()
    config["routes"]["support"]["sticky"] = "cookie:session"
    errors = errors_of(tmp_path, config)
    assert any(": routes.support.sticky: " in e for e in errors)
    config = good()
    config["routes"]["support"]["variants"][1]["name"] = "full"
    assert any("variant name 'full' is used twice" in e for e in errors_of(tmp_path, config))


def test_unknown_upstream_kind_and_missing_fields(tmp_path: Path) -> None:
    config = good()
    config["upstreams"]["az"] = {"kind": "bedrock", "base_url": "x"}
    assert any(": upstreams.az: " in e for e in errors_of(tmp_path, config))
    config = good()
    del config["upstreams"]["az"]["base_url"]
    assert any(
        "upstreams.az.azure.base_url: Field required" in e for e in errors_of(tmp_path, config)
    )


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes: [unclosed")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors[0].startswith(f"{path}: (file): invalid YAML")
    path.write_text("- a list")
    with pytest.raises(ConfigError):
        load_config(path)


def test_check_prints_routes_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, good())
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "route support: sticky=header:x-user-id" in out
    assert "90.00%" in out
    assert "10.00%" in out
    assert "fallback 1: local/base policy=passthrough" in out
    assert "shadow 5.00% of requests: local/next" in out
    assert "tracing: off" in out


def test_check_prints_error_lines_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = good()
    config["routes"]["support"]["variants"][0]["upstream"] = "nowhere"
    path = write(tmp_path, config)
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: routes.support.variants.0.upstream: unknown upstream 'nowhere'" in err


@pytest.mark.parametrize("name", ["tuned-proxy.example.yaml", "tuned-proxy.eval.yaml"])
def test_the_shipped_configs_are_valid(name: str) -> None:
    runtime = load_config(REPO / "policies" / name)
    assert "support-agent" in runtime.routes


@pytest.mark.parametrize("where", ["config", "policy"])
def test_a_key_given_twice_is_an_error_naming_it_and_both_lines(tmp_path: Path, where: str) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    config = (
        "upstreams: {local: {kind: mock}}\n"
        "routes:\n"
        "  chat:\n"
        "    variants: [{name: v, upstream: local, model: m, policy: p}]\n"
    )
    policy = "tools:\n  mode: passthrough\nvalidate_arguments: true\n"
    if where == "config":
        config += "routes:\n  other: {variants: [{name: v, upstream: local, model: m}]}\n"
    else:
        policy += "tools:\n  mode: passthrough\n  unknown: pass\n"
    (tmp_path / "tuned-proxy.yaml").write_text(config)
    (policies / "p.yaml").write_text(policy)
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "tuned-proxy.yaml")
    (line,) = refused.value.errors
    if where == "config":
        assert "duplicate key 'routes' (lines 2 and 5)" in line
        assert line.startswith(str(tmp_path / "tuned-proxy.yaml"))
    else:
        assert "duplicate key 'tools' (lines 1 and 4)" in line
        assert line.startswith(str(tmp_path / "policies" / "p.yaml"))


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    (tmp_path / "tuned-proxy.yaml").write_text(
        "upstreams:\n"
        "  base: &base {kind: compatible, base_url: 'http://127.0.0.1:1/v1'}\n"
        "  other: {<<: *base, timeout_s: 5}\n"
        "routes: {chat: {variants: [{name: v, upstream: other, model: m}]}}\n"
    )
    runtime = load_config(tmp_path / "tuned-proxy.yaml")
    assert runtime.config.upstreams["other"].timeout_s == 5


def test_capture_and_compare_are_linked_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = good()
    route = config["routes"]["support"]
    route["shadow"]["compare"] = "tool_calls"
    route["capture"] = {"dir": "captured", "sample": 0.5, "policy": "support-slim"}
    route["capture"]["redact"] = [r"\d{16}"]
    runtime = load_config(write(tmp_path, config))
    capture = runtime.routes["support"].capture
    assert capture is not None
    assert capture.dir == (tmp_path / "captured").resolve()
    assert capture.variants == {"full", "slim"}  # every variant, by default
    assert capture.policy is not None
    assert capture.policy.name == "support-slim"
    assert runtime.routes["support"].shadow is not None
    assert runtime.routes["support"].shadow.compare == "tool_calls"
    assert main(["check", "-c", str(write(tmp_path, config))]) == 0
    out = capsys.readouterr().out
    assert "shadow 5.00% of requests: local/next policy=passthrough, compares tool_calls" in out
    assert "capture 50.00% of full, slim into " in out
    assert "(tools of support-slim, 1 redact pattern(s))" in out


def test_capture_errors_name_the_key(tmp_path: Path) -> None:
    config = good()
    config["routes"]["support"]["capture"] = {
        "dir": "captured",
        "policy": "nope",
        "variants": ["full", "teacher"],
        "redact": ["[unclosed"],
    }
    errors = errors_of(tmp_path, config)
    assert any("routes.support.capture.redact" in e and "redact[0]" in e for e in errors)
    config["routes"]["support"]["capture"]["redact"] = []
    config["routes"]["support"]["shadow"]["compare"] = "answers"
    errors = errors_of(tmp_path, config)
    assert any("routes.support.shadow.compare" in e for e in errors)
    config["routes"]["support"]["shadow"]["compare"] = "tool_calls"
    errors = errors_of(tmp_path, config)
    assert any("routes.support.capture.variants: unknown variant 'teacher'" in e for e in errors)
    assert any("routes.support.capture.policy: policy 'nope' not found" in e for e in errors)


def test_tracing_is_off_unless_an_endpoint_is_given(tmp_path: Path) -> None:
    tracing = load_config(write(tmp_path, good())).config.tracing
    assert (tracing.enabled, tracing.otlp_endpoint) == (False, None)
    assert (tracing.sample, tracing.service_name) == (1.0, "tuned-proxy")


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otlp.example.com/api/v1/traces", "https://otlp.example.com/api/v1/traces"),
    ],
)
def test_a_tracing_endpoint_without_a_path_gets_otlps_traces_path(
    tmp_path: Path, given: str, used: str
) -> None:
    config = {**good(), "tracing": {"otlp_endpoint": given, "sample": 0.25}}
    tracing = load_config(write(tmp_path, config)).config.tracing
    assert (tracing.enabled, tracing.otlp_endpoint, tracing.sample) == (True, used, 0.25)
    assert describe_tracing(tracing) == (
        f"tracing: OTLP/HTTP to {used}, 25% of new traces, service tuned-proxy"
    )


def test_tracing_settings_are_checked(tmp_path: Path) -> None:
    tracing = {"otlp_endpoint": "collector:4318", "sample": 2, "service_name": "", "port": 1}
    path = write(tmp_path, {**good(), "tracing": tracing})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.errors)
    for field in ("otlp_endpoint", "sample", "service_name", "port"):
        assert f"tracing.{field}" in text
    assert "http:// or https:// URL" in text
