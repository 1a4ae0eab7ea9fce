"""The Helm chart, rendered by Helm's own engine (no cluster): every manifest of every mode is
checked against the Kubernetes API schemas, `helm lint` is clean, and what the pods would mount
is a config that tuned-proxy loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from packaging.version import Version

from proxy import __version__
from proxy.cli import build_parser
from proxy.config import load_config

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "tuned-proxy"
EXAMPLES = CHART / "examples"
DASHBOARD = CHART / "dashboards" / "tuned-proxy.json"
RULES = CHART / "rules" / "tuned-proxy.rules.yaml"
RELEASE = "rel"
NAMESPACE = "apps"
FULLNAME = f"{RELEASE}-tuned-proxy"
# The chart's oldest Kubernetes (native sidecars), or the oldest the schemas still know.
OLDEST_KUBE = Version("1.29.0")


def kube_versions() -> tuple[str, ...]:
    """The oldest supported and the newest Kubernetes that kubernetes-validate has schemas for."""
    known = kubernetes_validate.utils.all_versions()
    oldest = next((v for v in known if Version(v) >= OLDEST_KUBE), known[-1])
    return tuple(dict.fromkeys((oldest, known[-1])))


KUBE_VERSIONS = kube_versions()

Manifest = dict[str, Any]


def ci_values() -> dict[str, Manifest]:
    """The chart's test value sets (ci/*-values.yaml, as chart-testing reads them), by mode."""
    return {
        path.name.removesuffix("-values.yaml"): yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted((CHART / "ci").glob("*-values.yaml"))
    }


MODES: dict[str, Manifest] = {"default": {}, **ci_values()}


def render(
    values: Manifest | None = None, chart: Path = CHART, release: str = RELEASE
) -> dict[str, str]:
    with helm.Chart.load(chart) as loaded:
        return loaded.render(values or None, name=release, namespace=NAMESPACE)


def manifests(rendered: dict[str, str]) -> list[Manifest]:
    found: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith("NOTES.txt"):
            found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Manifest], kind: str) -> Manifest:
    (found,) = of_kind(docs, kind)
    return found


def pod_spec(docs: list[Manifest]) -> Manifest:
    spec: Manifest = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(spec: Manifest, name: str = "tuned-proxy") -> Manifest:
    everything = spec.get("initContainers", []) + spec["containers"]
    (found,) = (c for c in everything if c["name"] == name)
    return dict(found)


def notes(values: Manifest | None = None) -> str:
    return render(values)["tuned-proxy/templates/NOTES.txt"]


def volume(spec: Manifest, name: str) -> Manifest | None:
    return next((v for v in spec.get("volumes", []) if v["name"] == name), None)


def mount(proxy: Manifest, name: str) -> Manifest | None:
    return next((m for m in proxy.get("volumeMounts", []) if m["name"] == name), None)


def pod_annotations(docs: list[Manifest]) -> dict[str, str]:
    annotations: dict[str, str] = (
        one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations") or {}
    )
    return annotations


def check_service_monitor(monitor: Manifest, docs: list[Manifest]) -> None:
    """No schema for this CRD ships with kubernetes-validate: its required shape, checked here."""
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert monitor["metadata"]["name"]
    service = one(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "selects the Service"
    port_names = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
        assert set(endpoint) <= {
            "port",
            "path",
            "interval",
            "scrapeTimeout",
            "relabelings",
            "metricRelabelings",
        }


def check_prometheus_rule(rule: Manifest) -> None:
    """No schema for this CRD either: its required shape, checked here."""
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"}
    assert rule["metadata"]["name"]
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        assert group["name"]
        for recording in group["rules"]:
            assert set(recording) <= {"record", "expr", "labels"}
            assert isinstance(recording["record"], str)
            assert isinstance(recording["expr"], str)


def validate_all(docs: list[Manifest]) -> None:
    assert docs
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, docs)
            continue
        if doc["kind"] == "PrometheusRule":
            check_prometheus_rule(doc)
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def mounted_files(docs: list[Manifest], root: Path) -> Path:
    """Write the chart's ConfigMap out the way the pod mounts it; returns the config file."""
    config_map = next(d for d in of_kind(docs, "ConfigMap") if "tuned-proxy.yaml" in d["data"])
    volumes = {volume["name"]: volume for volume in pod_spec(docs)["volumes"]}
    for item in volumes["tuned-proxy-config"]["configMap"]["items"]:
        path = root / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_map["data"][item["key"]], encoding="utf-8")
    return root / "tuned-proxy.yaml"


@pytest.fixture(scope="module")
def sidecar_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/sidecar-app with this chart in charts/, as `helm dependency update` leaves it."""
    app = tmp_path_factory.mktemp("charts") / "sidecar-app"
    shutil.copytree(EXAMPLES / "sidecar-app", app)
    shutil.copytree(
        CHART, app / "charts" / "tuned-proxy", ignore=shutil.ignore_patterns("examples")
    )
    return app


# ----------------------------------------------------------------------------- every mode is valid


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_manifest_is_valid_kubernetes(mode: str) -> None:
    validate_all(manifests(render(MODES[mode])))


def test_the_sidecar_app_example_is_valid_kubernetes(sidecar_app: Path) -> None:
    validate_all(manifests(render(chart=sidecar_app)))


def test_the_plain_sidecar_example_is_valid_kubernetes() -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "sidecar.yaml").read_text(encoding="utf-8")))
    validate_all(docs)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_helm_lint_is_clean(mode: str) -> None:
    report = helm.lint(CHART, MODES[mode] or None, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not report["errors"]
    assert not problems


def test_helm_lint_is_clean_for_the_sidecar_app_example(sidecar_app: Path) -> None:
    report = helm.lint(sidecar_app, strict=True, with_subcharts=True)
    assert not report["errors"]
    assert not [m for m in report["messages"] if m["severity"] >= 2]


def test_the_chart_version_follows_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["appVersion"] == __version__


# ----------------------------------------------------------------------------- the config


@pytest.mark.parametrize("mode", ["default", "reload", "hpa"])
def test_the_mounted_config_loads(mode: str, tmp_path: Path) -> None:
    docs = manifests(render(MODES[mode]))
    runtime = load_config(mounted_files(docs, tmp_path))
    expected = (MODES[mode].get("config") or {}).get("routes", {"demo": None})
    assert set(runtime.routes) == set(expected)


def test_policies_are_mounted_in_the_configs_policies_dir(tmp_path: Path) -> None:
    docs = manifests(render(MODES["reload"]))
    config = mounted_files(docs, tmp_path)
    assert (config.parent / "policies" / "weather.yaml").is_file()
    assert (config.parent / "policies" / "weather.tools.json").is_file()
    runtime = load_config(config)
    variant = runtime.routes["weather"].variant("ft")
    assert variant is not None
    assert variant.policy.name == "weather"


def test_a_tool_file_keeps_its_text_byte_for_byte() -> None:
    tools = (REPO / "policies" / "weather.tools.json").read_text(encoding="utf-8")
    values = {**MODES["reload"], "policies": {"weather.tools.json": tools}}
    config_map = one(manifests(render(values)), "ConfigMap")
    assert config_map["data"]["weather.tools.json"] == tools


def test_a_tool_file_given_as_a_map_is_refused() -> None:
    values = {**MODES["reload"], "policies": {"weather.tools.json": {"type": "function"}}}
    with pytest.raises(helm.HelmError, match="as text"):
        render(values)


def test_config_given_as_text_is_kept_as_written(tmp_path: Path) -> None:
    text = (REPO / "policies" / "tuned-proxy.example.yaml").read_text(encoding="utf-8")
    config_map = one(manifests(render({"configYaml": text})), "ConfigMap")
    assert config_map["data"]["tuned-proxy.yaml"].strip() == text.strip()


def test_policies_beside_the_config_when_policies_dir_is_dot() -> None:
    values = {
        "config": {**MODES["reload"]["config"], "policies_dir": "."},
        "policies": MODES["reload"]["policies"],
    }
    volume = pod_spec(manifests(render(values)))["volumes"][0]
    paths = {item["path"] for item in volume["configMap"]["items"]}
    assert paths == {"tuned-proxy.yaml", "weather.yaml", "weather.tools.json"}


@pytest.mark.parametrize("policies_dir", ["/etc/policies", "../policies"])
def test_a_policies_dir_outside_the_config_folder_is_refused(policies_dir: str) -> None:
    values = {"config": {**MODES["reload"]["config"], "policies_dir": policies_dir}}
    with pytest.raises(helm.HelmError, match="policies_dir"):
        render(values)


# ----------------------------------------------------------------------------- rolling and reload


def test_the_checksum_changes_when_the_config_or_a_policy_changes() -> None:
    base = MODES["reload"] | {"reload": {"enabled": False}}
    other_config = base | {"config": base["config"] | {"policies_dir": "rules"}}
    policies = dict(base["policies"]) | {"weather.yaml": "training_tools: weather.tools.json\n"}
    other_policy = base | {"policies": policies}
    checksums = [
        pod_annotations(manifests(render(values)))["checksum/config"]
        for values in (base, base, other_config, other_policy)
    ]
    assert checksums[0] == checksums[1], "stable for the same config"
    assert len(set(checksums[1:])) == 3


def test_reload_mode_watches_the_config_instead_of_rolling_the_pods() -> None:
    docs = manifests(render(MODES["reload"]))
    assert "checksum/config" not in pod_annotations(docs)
    assert "--watch" in container(pod_spec(docs))["args"]
    default = manifests(render())
    assert "checksum/config" in pod_annotations(default)
    assert "--watch" not in container(pod_spec(default))["args"]


def test_an_existing_config_map_is_mounted_whole_without_a_checksum() -> None:
    docs = manifests(render(MODES["existing-configmap"]))
    assert not of_kind(docs, "ConfigMap"), "the chart renders no ConfigMap of its own"
    spec = pod_spec(docs)
    volume = next(v for v in spec["volumes"] if v["name"] == "tuned-proxy-config")
    assert volume["configMap"] == {"name": "support-proxy-config"}
    assert "checksum/config" not in pod_annotations(docs)
    (keys,) = container(spec)["env"]
    assert keys["name"] == "SUPPORT_PROXY_KEYS"
    assert keys["valueFrom"]["secretKeyRef"] == {"name": "support-proxy-keys", "key": "keys"}


# ----------------------------------------------------------------------------- tracing


@pytest.mark.parametrize("given", ["map", "text"])
def test_the_tracing_values_become_the_configs_tracing_section(given: str, tmp_path: Path) -> None:
    tracing = {"otlpEndpoint": "http://otel-collector.observability:4318", "sample": 0.5}
    config = MODES["reload"]["config"]
    values = {**MODES["reload"], "tracing": {**tracing, "serviceName": "support-proxy"}}
    if given == "text":
        values = {**values, "config": {}, "configYaml": yaml.safe_dump(config)}
    runtime = load_config(mounted_files(manifests(render(values)), tmp_path))
    assert (
        runtime.config.tracing.otlp_endpoint == "http://otel-collector.observability:4318/v1/traces"
    )
    assert (runtime.config.tracing.sample, runtime.config.tracing.service_name) == (
        0.5,
        "support-proxy",
    )
    assert set(runtime.routes) == set(config["routes"])


def test_without_an_endpoint_the_config_has_no_tracing(tmp_path: Path) -> None:
    docs = manifests(render({"tracing": {"sample": 0.1}}))
    assert "tracing" not in one(docs, "ConfigMap")["data"]["tuned-proxy.yaml"]
    assert not load_config(mounted_files(docs, tmp_path)).config.tracing.enabled


def test_tracing_set_twice_or_beside_an_existing_config_map_is_refused() -> None:
    endpoint = {"tracing": {"otlpEndpoint": "http://collector:4318"}}
    config = {**MODES["reload"]["config"], "tracing": {"otlp_endpoint": "http://other:4318"}}
    with pytest.raises(helm.HelmError, match="one place"):
        render({**MODES["reload"], "config": config, **endpoint})
    with pytest.raises(helm.HelmError, match="existingConfigMap"):
        render({**MODES["existing-configmap"], **endpoint})
    with pytest.raises(helm.HelmError, match="otlpEndpoint"):
        render({"tracing": {"otlpEndpoint": "collector:4318"}})


# ----------------------------------------------------------------------------- the Deployment


def test_the_deployment_listens_openly_with_client_keys_from_a_secret() -> None:
    docs = manifests(render())
    proxy = container(pod_spec(docs))
    args = build_parser().parse_args(proxy["args"])
    assert (args.host, args.port, args.config) == (
        "0.0.0.0",
        8080,
        "/etc/tuned-proxy/tuned-proxy.yaml",
    )
    assert not args.allow_unauthenticated
    (keys,) = proxy["env"]
    assert keys["name"] == "TUNED_PROXY_KEYS"  # the demo config's client_keys_env
    assert keys["valueFrom"]["secretKeyRef"] == {"name": f"{FULLNAME}-client-keys", "key": "keys"}
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["name"]: p["containerPort"] for p in proxy["ports"]} == {"http": 8080}


def test_upstream_keys_come_from_their_secrets() -> None:
    proxy = container(pod_spec(manifests(render(MODES["reload"]))))
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in proxy["env"]}
    assert env["VLLM_API_KEY"] == {"name": "vllm", "key": "api-key"}


def test_pods_outlive_the_drain_before_they_are_killed() -> None:
    spec = pod_spec(manifests(render({"drainTimeoutSeconds": 120, "preStopSleepSeconds": 7})))
    proxy = container(spec)
    args = build_parser().parse_args(proxy["args"])
    assert args.drain_timeout == 120
    assert proxy["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert spec["terminationGracePeriodSeconds"] > 120 + 7


def test_a_grace_period_shorter_than_the_drain_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render({"drainTimeoutSeconds": 30, "terminationGracePeriodSeconds": 20})


def test_a_config_without_client_keys_is_refused_unless_unauthenticated_is_asked() -> None:
    config = {
        "upstreams": {"local": {"kind": "mock"}},
        "routes": {"demo": {"variants": [{"name": "a", "upstream": "local", "model": "m"}]}},
    }
    with pytest.raises(helm.HelmError, match="client_keys_env"):
        render({"config": config})
    proxy = container(pod_spec(manifests(render({"config": config, "allowUnauthenticated": True}))))
    assert build_parser().parse_args(proxy["args"]).allow_unauthenticated
    assert "env" not in proxy


def test_the_container_is_locked_down() -> None:
    spec = pod_spec(manifests(render()))
    proxy = container(spec)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["automountServiceAccountToken"] is False
    assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    assert proxy["securityContext"]["allowPrivilegeEscalation"] is False
    assert proxy["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_values_are_checked_against_the_schema() -> None:
    with pytest.raises(helm.HelmError, match="replicaCont"):
        render({"replicaCont": 3})
    with pytest.raises(helm.HelmError, match="mode"):
        render({"mode": "daemonset"})


def test_config_and_config_yaml_together_are_refused() -> None:
    with pytest.raises(helm.HelmError, match="not both"):
        render({"config": MODES["reload"]["config"], "configYaml": "routes: {}\n"})


# ----------------------------------------------------------------------------- optional resources


def test_autoscaling_owns_the_replica_count() -> None:
    docs = manifests(render(MODES["hpa"]))
    assert "replicas" not in one(docs, "Deployment")["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert one(manifests(render()), "Deployment")["spec"]["replicas"] == 2


def test_optional_resources_are_off_by_default() -> None:
    kinds = {doc["kind"] for doc in manifests(render())}
    assert kinds == {"ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}


def test_the_service_monitor_scrapes_metrics() -> None:
    docs = manifests(render(MODES["servicemonitor"]))
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "10s")


def test_metrics_on_a_port_of_their_own_are_served_and_scraped_there() -> None:
    docs = manifests(render(MODES["metrics-port"]))
    proxy = container(pod_spec(docs))
    args = build_parser().parse_args(proxy["args"])
    assert (args.metrics_host, args.metrics_port) == ("0.0.0.0", 9090)
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in proxy["ports"]
    service_ports = one(docs, "Service")["spec"]["ports"]
    assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in (
        service_ports
    )
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    plain = container(pod_spec(manifests(render(MODES["servicemonitor"]))))
    assert build_parser().parse_args(plain["args"]).metrics_port is None


def test_the_dashboard_config_map_carries_the_dashboard_for_grafana() -> None:
    docs = manifests(render(MODES["dashboard"]))
    dashboard = next(
        d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    shipped = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert json.loads(dashboard["data"]["tuned-proxy.json"]) == shipped


def test_the_prometheus_rule_carries_the_recording_rules_file() -> None:
    docs = manifests(render(MODES["servicemonitor"]))
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["namespace"] == NAMESPACE
    shipped = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert rule["spec"] == {"groups": shipped["groups"]}
    assert f"PrometheusRule {FULLNAME}" in notes(MODES["servicemonitor"])


def test_the_prometheus_rule_is_rendered_in_sidecar_mode_too() -> None:
    values = {**MODES["sidecar"], "prometheusRule": {"enabled": True, "namespace": "monitoring"}}
    rule = one(manifests(render(values)), "PrometheusRule")
    assert rule["metadata"]["namespace"] == "monitoring"


# ----------------------------------------------------------------------------- capture

CAPTURE = "tuned-proxy-capture"
DEFAULT_MOUNT = "/var/lib/tuned-proxy/capture"


def on_a_claim(**volume: Any) -> Manifest:
    """Capture values on a persistentVolumeClaim, with `volume` keys over the defaults."""
    return {"capture": {"enabled": True, "volume": {"type": "persistentVolumeClaim", **volume}}}


@pytest.mark.parametrize(
    ("mode", "kind", "creates_claim"),
    [("capture", "emptyDir", False), ("capture-pvc", "persistentVolumeClaim", True)],
)
def test_the_capture_volume_is_mounted_where_the_routes_write(
    mode: str, kind: str, creates_claim: bool
) -> None:
    values = MODES[mode]
    docs = manifests(render(values))
    spec = pod_spec(docs)
    captured = volume(spec, CAPTURE)
    assert captured is not None
    assert set(captured) == {"name", kind}
    mounted = mount(container(spec), CAPTURE)
    path = values["capture"].get("mountPath", DEFAULT_MOUNT)
    assert mounted == {"name": CAPTURE, "mountPath": path}
    dirs = {route["capture"]["dir"] for route in values["config"]["routes"].values()}
    assert dirs == {mounted["mountPath"]}, "routes.NAME.capture.dir is the mountPath"
    assert spec["securityContext"]["fsGroup"] == 10001, "writable by the proxy's user"
    claims = of_kind(docs, "PersistentVolumeClaim")
    assert bool(claims) == creates_claim
    if creates_claim:
        (claim,) = claims
        assert captured["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
        assert claim["metadata"]["name"] == f"{FULLNAME}-capture"
        assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["spec"]["storageClassName"] == "standard"
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    else:
        assert captured["emptyDir"] == {"sizeLimit": "2Gi"}


def test_a_collector_in_the_pod_reads_the_capture_volume() -> None:
    spec = pod_spec(manifests(render(MODES["capture"])))
    assert [c["name"] for c in spec["containers"]] == ["tuned-proxy", "capture-collector"]
    collector = container(spec, "capture-collector")
    assert mount(collector, CAPTURE) == {"name": CAPTURE, "mountPath": "/capture", "readOnly": True}


def test_capture_is_off_by_default() -> None:
    docs = manifests(render())
    spec = pod_spec(docs)
    assert volume(spec, CAPTURE) is None
    assert mount(container(spec), CAPTURE) is None
    assert not of_kind(docs, "PersistentVolumeClaim")


def test_a_named_claim_is_mounted_and_not_created() -> None:
    docs = manifests(render(on_a_claim(claimName="captures")))
    assert not of_kind(docs, "PersistentVolumeClaim")
    captured = volume(pod_spec(docs), CAPTURE)
    assert captured == {"name": CAPTURE, "persistentVolumeClaim": {"claimName": "captures"}}


@pytest.mark.parametrize(
    ("storage_class", "expected"), [("", None), ("-", ""), ("fast-ssd", "fast-ssd")]
)
def test_the_claims_storage_class(storage_class: str, expected: str | None) -> None:
    values = on_a_claim(storageClassName=storage_class, keep=False)
    claim = one(manifests(render(values)), "PersistentVolumeClaim")
    assert claim["spec"].get("storageClassName") == expected
    assert "annotations" not in claim["metadata"]


def test_an_empty_dir_without_a_size_limit() -> None:
    values = {"capture": {"enabled": True, "volume": {"sizeLimit": ""}}}
    captured = volume(pod_spec(manifests(render(values))), CAPTURE)
    assert captured == {"name": CAPTURE, "emptyDir": {}}


def test_a_capturing_route_needs_the_volume_at_its_dir() -> None:
    with pytest.raises(helm.HelmError, match=r"capture\.enabled"):
        render({**MODES["capture"], "capture": {"enabled": False}})
    with pytest.raises(helm.HelmError, match=r"capture\.dir \(/var/lib/tuned-proxy/capture\)"):
        render({**MODES["capture"], "capture": {"enabled": True, "mountPath": "/data"}})
    assert "WARNING: no route of the config captures" in notes({"capture": {"enabled": True}})


@pytest.mark.parametrize("path", ["/", "/tmp", "/tmp/capture", "/etc/tuned-proxy/capture"])
def test_a_capture_mount_over_the_charts_own_is_refused(path: str) -> None:
    with pytest.raises(helm.HelmError, match=r"capture\.mountPath"):
        render({"capture": {"enabled": True, "mountPath": path}})


@pytest.mark.parametrize(
    ("values", "warned"),
    [
        (on_a_claim(), True),  # two replicas
        (on_a_claim() | {"replicaCount": 1}, True),  # a rolling update surges a second pod
        (on_a_claim() | {"replicaCount": 1, "autoscaling": {"enabled": True}}, True),
        (
            on_a_claim()
            | {"replicaCount": 1, "strategy": {"type": "Recreate", "rollingUpdate": None}},
            False,
        ),
        (on_a_claim(accessModes=["ReadWriteMany"]), False),
        (MODES["capture-pvc"], False),
        (MODES["capture"], False),
    ],
)
def test_a_read_write_once_claim_for_several_pods_is_warned_of(
    values: Manifest, warned: bool
) -> None:
    assert ("is mounted on one node at a time" in notes(values)) == warned


# ----------------------------------------------------------------------------- sidecar mode


def test_sidecar_mode_renders_only_the_config() -> None:
    docs = manifests(render(MODES["sidecar"]))
    assert {doc["kind"] for doc in docs} == {"ConfigMap"}


def sidecar_pod(sidecar_app: Path, values: Manifest | None = None) -> list[Manifest]:
    return manifests(render(values, chart=sidecar_app, release="support"))


def test_the_sidecar_listens_on_loopback_without_keys(sidecar_app: Path) -> None:
    spec = pod_spec(sidecar_pod(sidecar_app))
    proxy = container(spec)
    args = build_parser().parse_args(proxy["args"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    assert not args.allow_unauthenticated
    assert [item["name"] for item in proxy["env"]] == ["AZURE_OPENAI_API_KEY"], "no client keys"
    assert proxy["restartPolicy"] == "Always", "a native sidecar"
    assert proxy in spec["initContainers"]
    assert proxy["securityContext"]["runAsNonRoot"] is True
    app_env = {e["name"]: e["value"] for e in container(spec, "app")["env"]}
    assert app_env["OPENAI_BASE_URL"] == "http://127.0.0.1:8080/v1"


def test_a_classic_sidecar_is_an_ordinary_container(sidecar_app: Path) -> None:
    values = {"tuned-proxy": {"sidecar": {"native": False, "port": 9090}}}
    spec = pod_spec(sidecar_pod(sidecar_app, values))
    proxy = container(spec)
    assert "initContainers" not in spec
    assert "restartPolicy" not in proxy
    assert "startupProbe" not in proxy
    assert build_parser().parse_args(proxy["args"]).port == 9090


def test_a_sidecar_with_a_metrics_port_opens_it_and_only_it(sidecar_app: Path) -> None:
    values = {"tuned-proxy": {"metrics": {"port": 9464}}}
    proxy = container(pod_spec(sidecar_pod(sidecar_app, values)))
    args = build_parser().parse_args(proxy["args"])
    assert (args.host, args.metrics_host, args.metrics_port) == ("127.0.0.1", "0.0.0.0", 9464)
    assert {"name": "tp-metrics", "containerPort": 9464, "protocol": "TCP"} in proxy["ports"]


def test_the_sidecar_pod_mounts_a_config_that_loads(sidecar_app: Path, tmp_path: Path) -> None:
    runtime = load_config(mounted_files(sidecar_pod(sidecar_app), tmp_path))
    assert runtime.config.client_keys_env is None, "no client keys in the Pod"
    assert runtime.routes["support-agent"].variant("ft") is not None


def test_the_sidecar_pod_rolls_on_config_changes_unless_reloading(sidecar_app: Path) -> None:
    assert "checksum/config" in pod_annotations(sidecar_pod(sidecar_app))
    reloading = sidecar_pod(sidecar_app, {"tuned-proxy": {"reload": {"enabled": True}}})
    assert "checksum/config" not in pod_annotations(reloading)
    assert "--watch" in container(pod_spec(reloading))["args"]


@pytest.mark.parametrize("kind", ["emptyDir", "persistentVolumeClaim"])
def test_the_sidecar_mounts_the_capture_volume(sidecar_app: Path, kind: str) -> None:
    capture = {"enabled": True, "mountPath": "/captures", "volume": {"type": kind}}
    docs = sidecar_pod(sidecar_app, {"tuned-proxy": {"capture": capture}})
    validate_all(docs)
    spec = pod_spec(docs)
    captured = volume(spec, CAPTURE)
    assert captured is not None
    assert kind in captured
    assert mount(container(spec), CAPTURE) == {"name": CAPTURE, "mountPath": "/captures"}
    assert mount(container(spec, "app"), CAPTURE) is None, "the proxy's alone"
    claims = of_kind(docs, "PersistentVolumeClaim")
    assert [c["metadata"]["name"] for c in claims] == (
        ["support-tuned-proxy-capture"] if kind == "persistentVolumeClaim" else []
    )
    if claims:
        assert captured["persistentVolumeClaim"]["claimName"] == "support-tuned-proxy-capture"


def test_the_plain_sidecar_example_matches_the_chart(sidecar_app: Path) -> None:
    """examples/sidecar.yaml is what the chart renders for examples/sidecar-app, minus Helm."""
    rendered = sidecar_pod(sidecar_app)
    plain = list(yaml.safe_load_all((EXAMPLES / "sidecar.yaml").read_text(encoding="utf-8")))
    assert container(pod_spec(plain)) == container(pod_spec(rendered))
    plain_volumes, rendered_volumes = pod_spec(plain)["volumes"], pod_spec(rendered)["volumes"]
    assert plain_volumes == rendered_volumes
    plain_data, rendered_data = one(plain, "ConfigMap")["data"], one(rendered, "ConfigMap")["data"]
    assert plain_data.keys() == rendered_data.keys()
    for key, text in plain_data.items():
        assert yaml.safe_load(text) == yaml.safe_load(rendered_data[key]), key
