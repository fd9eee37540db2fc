"""Rollouts: the controller on a stand-in gateway, the cluster target's patches, Prometheus, CLI.

The gateway, the Kubernetes API and Prometheus are stand-ins on loopback (tests/rollout_fakes.py);
the controller, the targets, the metrics sources and the Kubernetes client are the real code.
Time is simulated: no test sleeps for a step window, except the CLI wiring tests at the end.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollout_fakes import FakeGateway, FakeKubeAPI, FakePrometheus, SimulatedTraffic
from typer.testing import CliRunner

from components.audit import read_audit
from components.bundle import BundleError, register_bundle, resolve, set_alias
from components.store import ObjectStore, open_store
from monitoring.canary import CanaryThresholds, VersionMetrics
from monitoring.rollout import (
    Backend,
    CanaryExistsError,
    GatewayMetrics,
    LocalGatewayTarget,
    LogOnlyMetrics,
    MetricsError,
    NoCanaryError,
    PrometheusMetrics,
    RolloutError,
    TargetUnavailableError,
    UnsupportedDeploymentError,
    parse_steps,
    promote,
    rollback,
    run_rollout,
    status,
)
from monitoring.rollout_cluster import STABLE_ANNOTATION, InferenceServiceTarget
from monitoring.rollout_metrics import promql_queries

ROOT = Path(__file__).resolve().parents[1]
MODEL = "fraud"
ISVC_PATH = "/apis/serving.kserve.io/v1beta1/namespaces/fraudops/inferenceservices/fraud-detector"
MERGE = "application/merge-patch+json"


def registry(root: Path, name: str = MODEL) -> ObjectStore:
    """A store with versions v1, v2, v3 of ``name`` registered, champion v1."""
    store = open_store(str(root / "store"))
    folder = root / "bundle"
    folder.mkdir(exist_ok=True)
    (folder / "model.json").write_text("{}")
    for _ in range(3):
        register_bundle(store, name, folder, {"metrics": {}})
    set_alias(store, name, "champion", "v1")
    return store


@pytest.fixture
def store(tmp_path) -> ObjectStore:
    return registry(tmp_path)


@pytest.fixture
def gateway():
    fake = FakeGateway(MODEL, "v1")
    yield fake
    fake.close()


def roll(
    gateway: FakeGateway,
    store: ObjectStore,
    version: str,
    behaviour: dict[str, str] | None = None,
    rate: float = 100.0,
    metrics: Any = None,
    target: Any = None,
    **kwargs: Any,
):
    """Run an automated rollout through the fake gateway on simulated time."""
    traffic = SimulatedTraffic(
        store, MODEL, gateway.split, behaviour, rate=rate, record=gateway.record
    )
    target = target or LocalGatewayTarget(gateway.url)
    lines: list[str] = []
    options: dict[str, Any] = {
        "steps": (10, 50, 100),
        "step_seconds": 60,
        "log_delay_seconds": 2,
        **kwargs,
    }
    result = run_rollout(
        target,
        metrics or GatewayMetrics(target),
        store=store,
        model=MODEL,
        version=version,
        log=lines.append,
        clock=traffic.clock,
        sleep=traffic.sleep,
        **options,
    )
    return result, traffic, lines


def events(store: ObjectStore, name: str) -> list[dict[str, Any]]:
    return read_audit(store, name)


# -- the controller, locally -------------------------------------------------------------------


def test_a_good_canary_is_promoted_step_by_step(gateway, store):
    result, traffic, lines = roll(gateway, store, "v2")
    assert result.outcome == result.decision == "promoted", result.reason
    assert [(s.percent, s.attempt, s.verdict.status) for s in result.steps] == [
        (10, 1, "passed"),
        (50, 1, "passed"),
    ]
    assert gateway.posts == [
        ("/rollout/canary", {"version": "v2", "percent": 10}),
        ("/rollout/traffic", {"percent": 50}),
        ("/rollout/promote", None),
    ]
    assert gateway.split() == ("v2", None, 0)
    assert result.state.stable == Backend("v2", "http://127.0.0.1:9/canary", 100)
    assert resolve(store, MODEL, "champion") == "v2"
    removed = read_audit(store, "alias_removed")  # canary named v2 during the rollout only
    assert [(e["inputs"]["alias"], e["outcome"]["previous"]) for e in removed] == [("canary", "v2")]
    with pytest.raises(BundleError, match="no alias 'canary'"):
        resolve(store, MODEL, "canary")
    assert traffic.sleeps == [60, 2, 60, 2]  # each window, then the log delay
    first, second = (s.verdict for s in result.steps)
    # 100 requests/s for 60 s: all counted, about 10% then 50% on the canary, all logged
    assert first.stable["requests"] + first.canary["requests"] == 6_000
    assert 450 < first.canary["requests"] < 750
    assert 2_700 < second.canary["requests"] < 3_300
    assert first.canary["transactions"] == first.canary["requests"]
    assert first.check("error_rate").value == 0.0
    assert first.check("score_psi").value < 0.1
    assert lines[-1] == (
        "promoted: v2 passed 2 analysed window(s) at 10%/50% and now serves all traffic"
    )


def test_every_decision_and_its_numbers_go_to_the_audit_log(gateway, store):
    result, _, _ = roll(gateway, store, "v2")
    (start,) = events(store, "rollout.start")
    steps = events(store, "rollout.step")
    (promoted,) = events(store, "rollout.promote")
    assert not events(store, "rollout.rollback")
    assert {e["inputs"]["rollout_id"] for e in [start, *steps, promoted]} == {result.rollout_id}
    assert start["inputs"]["steps"] == [10, 50, 100]
    assert start["outcome"]["alias"] == "canary -> v2"
    assert [e["inputs"]["percent"] for e in steps] == [10, 50]
    step = steps[0]
    assert step["inputs"]["window"]["seconds"] == 60.0
    assert step["inputs"]["thresholds"] == CanaryThresholds().as_dict()
    assert step["inputs"]["metrics_source"].startswith("gateway stats http://127.0.0.1:")
    assert step["outcome"]["status"] == "passed"
    checks = {c["name"]: c for c in step["outcome"]["checks"]}
    assert checks["alert_rate_ratio"]["threshold"] == "in [0.5, 2.0]"
    assert checks["score_psi"]["value"] == result.steps[0].verdict.check("score_psi").value
    assert step["outcome"]["canary"]["requests"] == result.steps[0].verdict.canary["requests"]
    assert promoted["inputs"]["manual"] is False and promoted["inputs"]["percent"] == 100
    assert promoted["outcome"]["alias"] == "champion -> v2"
    assert [s["status"] for s in promoted["outcome"]["steps"]] == ["passed", "passed"]
    assert len(result.audit_keys) == 4 and result.steps[0].audit_key in result.audit_keys


def test_a_canary_that_flags_almost_everything_is_rolled_back_at_the_first_step(gateway, store):
    result, _, lines = roll(gateway, store, "v3", {"v3": "alerts"})
    assert result.outcome == "rolled_back"
    (step,) = result.steps
    assert (step.percent, step.verdict.status) == (10, "failed")
    assert [c.name for c in step.verdict.checks if c.status == "fail"] == [
        "score_psi",
        "alert_rate_ratio",
    ]
    assert step.verdict.check("alert_rate_ratio").value > 15
    assert gateway.posts == [
        ("/rollout/canary", {"version": "v3", "percent": 10}),
        ("/rollout/rollback", None),
    ]
    assert gateway.split() == ("v1", None, 0)
    assert resolve(store, MODEL, "champion") == "v1"
    assert result.reason.startswith("step 10%: canary v3 vs stable v1 FAILED score_psi")
    (rolled,) = events(store, "rollout.rollback")
    assert rolled["outcome"]["reason"] == result.reason
    assert (rolled["inputs"]["manual"], rolled["inputs"]["percent"]) == (False, 10)
    assert rolled["outcome"]["state"]["canary"] is None
    assert lines[-1] == "rolled back: all traffic on v1"


def test_a_canary_that_errors_is_rolled_back(gateway, store):
    result, _, _ = roll(gateway, store, "v3", {"v3": "errors"})
    assert result.outcome == "rolled_back"
    verdict = result.steps[0].verdict
    assert verdict.status == "failed"
    assert verdict.check("error_rate").value == 1.0
    assert verdict.canary["errors_5xx"] == verdict.canary["requests"] > 400
    assert verdict.canary["transactions"] == 0  # an erroring server logs nothing
    assert gateway.posts[-1] == ("/rollout/rollback", None)


def test_too_little_traffic_extends_the_window_then_rolls_back_to_be_safe(gateway, store):
    result, traffic, lines = roll(gateway, store, "v2", rate=2.0, max_extensions=2)
    assert result.outcome == "rolled_back"
    assert [(s.percent, s.attempt, s.verdict.status) for s in result.steps] == [
        (10, 1, "inconclusive"),
        (10, 2, "inconclusive"),
        (10, 3, "inconclusive"),
    ]
    # the window grows from the same start: 60, 120, 180 s
    assert traffic.sleeps == [60, 2, 58, 2, 58, 2]
    ends = [s.window_end[11:19] for s in result.steps]
    assert len(set(s.window_start for s in result.steps)) == 1 and len(set(ends)) == 3
    assert "still inconclusive after 3 window(s) (180 s), not trusted" in result.reason
    assert "too few requests to judge: v2 (canary)" in result.reason
    assert sum("extending the window by 60 s" in line for line in lines) == 2
    assert gateway.posts[-1] == ("/rollout/rollback", None)


def test_an_inconclusive_step_that_gets_enough_traffic_later_passes(gateway, store):
    thresholds = CanaryThresholds(min_requests=100, min_transactions=100)
    result, _, _ = roll(gateway, store, "v2", rate=10.0, thresholds=thresholds)
    # 10 req/s at 10%: ~60 canary requests per minute, enough after the first extension
    assert [(s.percent, s.attempt, s.verdict.status) for s in result.steps][:2] == [
        (10, 1, "inconclusive"),
        (10, 2, "passed"),
    ]
    assert result.outcome == "promoted"


def test_nothing_is_deployed_when_the_rollout_cannot_start(gateway, store):
    with pytest.raises(BundleError, match="has no version v9"):
        roll(gateway, store, "v9")
    with pytest.raises(RolloutError, match="v1 is already the stable version"):
        roll(gateway, store, "v1")
    with pytest.raises(RolloutError, match="steps \\[50, 10\\]: shares must increase"):
        roll(gateway, store, "v2", steps=(50, 10))
    gateway.canary = {"version": "v3", "url": "http://x", "percent": 20}
    with pytest.raises(CanaryExistsError, match=r"already has a canary \(v3 at 20%\)"):
        roll(gateway, store, "v2")
    assert gateway.posts == []
    other = FakeGateway("another-model", "v1")
    try:
        with pytest.raises(RolloutError, match="serves model 'another-model', not 'fraud'"):
            roll(other, store, "v2")
    finally:
        other.close()


class BrokenMetrics:
    description = "broken"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def collect(self, *args: Any) -> dict[str, VersionMetrics]:
        raise self.error


def test_a_metrics_failure_mid_rollout_rolls_back(gateway, store):
    result, _, _ = roll(gateway, store, "v2", metrics=BrokenMetrics(MetricsError("down")))
    assert result.outcome == "rolled_back"
    assert result.reason == "the rollout could not go on: down"
    assert gateway.posts[-1] == ("/rollout/rollback", None)
    # a bug rolls back too, and is not hidden
    gateway2 = FakeGateway(MODEL, "v1")
    try:
        with pytest.raises(ZeroDivisionError):
            roll(gateway2, store, "v2", metrics=BrokenMetrics(ZeroDivisionError("bug")))
        assert gateway2.posts[-1] == ("/rollout/rollback", None)
        rolled = events(store, "rollout.rollback")[-1]
        assert rolled["outcome"]["reason"] == "unexpected ZeroDivisionError during the rollout: bug"
    finally:
        gateway2.close()


class RollbackFails(LocalGatewayTarget):
    def rollback(self):
        raise TargetUnavailableError("gateway gone")


def test_a_failed_rollback_says_traffic_may_still_reach_the_canary(gateway, store):
    target = RollbackFails(gateway.url)
    with pytest.raises(
        RolloutError, match=r"rolling back v3 failed .*run `fraudops rollout rollback`"
    ):
        roll(gateway, store, "v3", {"v3": "alerts"}, target=target)
    rolled = events(store, "rollout.rollback")[-1]
    assert rolled["outcome"]["rollback_error"] == "TargetUnavailableError: gateway gone"
    assert status(target, store=store, model=MODEL).outcome == "rollback failed"


def test_manual_promote_rollback_and_status(gateway, store):
    target = LocalGatewayTarget(gateway.url)
    with pytest.raises(NoCanaryError, match="has no canary to roll back \\(stable v1\\)"):
        rollback(target, store=store, model=MODEL)
    assert status(target, store=store, model=MODEL).outcome == "none"
    target.start("v3", 20)
    state = rollback(target, store=store, model=MODEL, reason="looked wrong")
    assert state.canary is None and state.stable.version == "v1"
    (event,) = events(store, "rollout.rollback")
    assert event["inputs"]["manual"] is True and event["inputs"]["percent"] == 20
    assert event["outcome"]["reason"] == "looked wrong"
    target.start("v2", 30)
    state = promote(target, store=store, model=MODEL)
    assert state.stable.version == "v2"
    assert resolve(store, MODEL, "champion") == "v2"
    assert events(store, "rollout.promote")[0]["outcome"]["alias"] == "champion -> v2"


def test_status_shows_the_latest_rollout_and_its_steps(gateway, store):
    result, _, _ = roll(gateway, store, "v3", {"v3": "alerts"})
    info = status(LocalGatewayTarget(gateway.url), store=store, model=MODEL)
    assert info.rollout_id == result.rollout_id
    assert info.outcome == "rolled back"
    assert [e["event"] for e in info.events] == [
        "rollout.start",
        "rollout.step",
        "rollout.rollback",
    ]
    assert info.steps[0]["outcome"]["status"] == "failed"
    assert info.state.stable.version == "v1" and info.state.canary is None


def test_gateway_errors_name_the_gateway_and_the_fix(gateway):
    with pytest.raises(
        TargetUnavailableError, match=r"cannot reach the gateway at http://127.0.0.1:1 "
    ):
        LocalGatewayTarget("http://127.0.0.1:1").state()
    target = LocalGatewayTarget(gateway.url)
    with pytest.raises(NoCanaryError, match=r"no canary.*fraudops rollout start"):
        target.set_traffic(50)
    target.start("v2", 10)
    with pytest.raises(CanaryExistsError, match="already has a canary"):
        target.start("v3", 10)
    gateway.stable["version"] = "v7"
    with pytest.raises(MetricsError, match="the gateway's stable is v7, the rollout expects v1"):
        GatewayMetrics(gateway.url).collect(MODEL, "v1", "v2", 0.0, 1.0)


def test_parse_steps():
    assert parse_steps("10, 50,100") == (10, 50, 100)
    assert parse_steps([25, 75]) == (25, 75)
    for bad, match in (
        ("10,x", "comma-separated whole percentages"),
        ("0,50", "between 1 and 100"),
        ("10,150", "between 1 and 100"),
        ("50,50", "must increase"),
        ("100", "at least one share below 100"),
    ):
        with pytest.raises(RolloutError, match=match):
            parse_steps(bad)


# -- Prometheus ------------------------------------------------------------------------------


def test_promql_for_one_version_matches_the_server_metrics_and_parses():
    import promql_parser

    queries = promql_queries("fraud-detector", "v4", 59.2, {"namespace": "fraudops"})
    selector = '{model="fraud-detector",version="v4",namespace="fraudops"'
    duration = "fraudops_serving_request_duration_seconds_bucket"
    assert queries == {
        "requests": f"sum(increase(fraudops_serving_requests_total{selector}}}[60s]))",
        "errors_5xx": (
            f'sum(increase(fraudops_serving_requests_total{selector},code=~"5.."}}[60s]))'
        ),
        "client_errors_4xx": (
            f'sum(increase(fraudops_serving_requests_total{selector},code=~"4.."}}[60s]))'
        ),
        "latency_p50_ms": (
            f"1000 * histogram_quantile(0.5, sum by (le) (rate({duration}{selector}}}[60s])))"
        ),
        "latency_p99_ms": (
            f"1000 * histogram_quantile(0.99, sum by (le) (rate({duration}{selector}}}[60s])))"
        ),
    }
    for query in [*queries.values(), *promql_queries('m"x', "v\\1", 1).values()]:
        promql_parser.parse(query)  # raises on invalid PromQL
    # the server exports exactly these names (serving/metrics.py)
    from prometheus_client import CollectorRegistry, generate_latest

    from serving.metrics import ServingMetrics

    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    metrics.requests.labels("fraud-detector", "v4", "v1", "200").inc()
    metrics.latency.labels("fraud-detector", "v4", "v1").observe(0.01)
    exposed = generate_latest(registry).decode()
    assert 'fraudops_serving_requests_total{code="200",model="fraud-detector"' in exposed
    assert "fraudops_serving_request_duration_seconds_bucket{" in exposed


def test_prometheus_numbers_per_version_from_the_http_api():
    def answer(query: str):
        stable = 'version="v1"' in query
        if query.startswith("sum(increase") and 'code=~"5' in query:
            return FakePrometheus.vector(2.2) if stable else FakePrometheus.vector()
        if query.startswith("sum(increase") and 'code=~"4' in query:
            return FakePrometheus.vector(1)
        if query.startswith("sum(increase"):
            return FakePrometheus.vector(1000.4 if stable else 99.6)
        if "histogram_quantile(0.5," in query:
            return FakePrometheus.vector(3.1)
        return FakePrometheus.vector(12.5 if stable else "NaN")

    prometheus = FakePrometheus(answer)
    try:
        source = PrometheusMetrics(prometheus.url, matchers={"namespace": "fraudops"})
        out = source.collect("fraud-detector", "v1", "v4", 1_800_000_000.0, 1_800_000_060.0)
    finally:
        prometheus.close()
    source_name = f"Prometheus {prometheus.url}"
    assert out["stable"] == VersionMetrics(1000, 2, None, 1, 3.1, 12.5, source_name)
    assert out["canary"] == VersionMetrics(100, 0, None, 1, 3.1, None, source_name)
    assert len(prometheus.queries) == 10
    assert {q["time"] for q in prometheus.queries} == {"1800000060.000"}
    assert all(
        "[60s]" in q["query"] and 'namespace="fraudops"' in q["query"] for q in prometheus.queries
    )


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (
            FakePrometheus.error("bad_data", "parse error at char 5"),
            "rejected .*bad_data: parse error",
        ),
        (FakePrometheus.vector(1, 2), "returned 2 series, expected one; narrow it"),
    ],
)
def test_prometheus_errors_name_the_query_and_the_fix(reply, match):
    prometheus = FakePrometheus(lambda query: reply)
    try:
        with pytest.raises(MetricsError, match=match):
            PrometheusMetrics(prometheus.url).collect("m", "v1", "v2", 0.0, 60.0)
    finally:
        prometheus.close()
    with pytest.raises(
        MetricsError, match=r"cannot reach Prometheus at http://127.0.0.1:1 .*--prometheus-url"
    ):
        PrometheusMetrics("http://127.0.0.1:1").collect("m", "v1", "v2", 0.0, 60.0)


# -- the cluster target against the Kubernetes client --------------------------------------------


def manifest_isvc(**changes: Any) -> dict[str, Any]:
    """The project's InferenceService (manifests/base) as the API server returns it."""
    isvc = yaml.safe_load((ROOT / "manifests/base/inferenceservice.yaml").read_text())
    isvc["metadata"]["namespace"] = "fraudops"
    isvc["status"] = {
        "components": {
            "predictor": {
                "latestCreatedRevision": "fraud-detector-predictor-00001",
                "latestReadyRevision": "fraud-detector-predictor-00001",
                "latestRolledoutRevision": "fraud-detector-predictor-00001",
            }
        },
        "conditions": [{"type": "Ready", "status": "True"}],
        "observedGeneration": 1,
    }
    for path, value in changes.items():
        node = isvc
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return isvc


def kube_target(api: FakeKubeAPI, name: str = "fraud-detector", **kwargs: Any):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = api.url
    api_client = client.ApiClient(configuration)
    return InferenceServiceTarget(
        name,
        "fraudops",
        client.CustomObjectsApi(api_client),
        client.CoreV1Api(api_client),
        **kwargs,
    )


@pytest.fixture
def kube():
    api = FakeKubeAPI(manifest_isvc())
    yield api
    api.close()


def containers_with(uri: str) -> list[dict[str, Any]]:
    containers = copy.deepcopy(manifest_isvc()["spec"]["predictor"]["containers"])
    assert containers[0]["env"][0]["name"] == "STORAGE_URI"
    containers[0]["env"][0]["value"] = uri
    return containers


V1 = "s3://fraudops/models/fraud-detector/v1"
V4 = "s3://fraudops/models/fraud-detector/v4"


def test_cluster_start_traffic_promote_are_exact_merge_patches(kube):
    target = kube_target(kube)
    state = target.state()
    assert (state.model, state.stable, state.canary) == ("fraud-detector", Backend("v1", V1), None)
    assert state.details["mode"] == "Knative"
    state = target.start("v4", 10)
    ((path, content_type, body),) = kube.patches
    assert (path, content_type) == (ISVC_PATH, MERGE)
    assert body == {
        "metadata": {"resourceVersion": "1", "annotations": {STABLE_ANNOTATION: V1}},
        "spec": {"predictor": {"canaryTrafficPercent": 10, "containers": containers_with(V4)}},
    }
    assert state.stable == Backend("v1", V1, 90) and state.canary == Backend("v4", V4, 10)
    target.set_traffic(50)
    assert kube.patches[-1] == (
        ISVC_PATH,
        MERGE,
        {"spec": {"predictor": {"canaryTrafficPercent": 50}}},
    )
    state = target.promote()
    assert kube.patches[-1] == (
        ISVC_PATH,
        MERGE,
        {
            "metadata": {"annotations": {STABLE_ANNOTATION: None}},
            "spec": {"predictor": {"canaryTrafficPercent": None}},
        },
    )
    predictor = kube.isvc["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert STABLE_ANNOTATION not in kube.isvc["metadata"]["annotations"]
    assert predictor["containers"] == containers_with(V4)
    assert (state.stable, state.canary) == (Backend("v4", V4), None)


def test_cluster_rollback_pins_traffic_then_restores_the_stable_uri(kube):
    target = kube_target(kube)
    target.start("v4", 10)
    state = target.rollback()
    assert kube.patches[1:] == [
        (ISVC_PATH, MERGE, {"spec": {"predictor": {"canaryTrafficPercent": 0}}}),
        (
            ISVC_PATH,
            MERGE,
            {
                "metadata": {"resourceVersion": "3", "annotations": {STABLE_ANNOTATION: None}},
                "spec": {"predictor": {"containers": containers_with(V1)}},
            },
        ),
    ]
    assert kube.isvc["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert kube.isvc["spec"]["predictor"]["containers"] == containers_with(V1)
    assert (state.stable, state.canary) == (Backend("v1", V1), None)
    assert state.details["canaryTrafficPercent"] == 0
    # the next rollout starts from there
    target.start("v3", 10)
    assert kube.patches[-1][2]["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_cluster_model_format_predictor_patches_storage_uri():
    isvc = manifest_isvc(**{"spec.predictor.containers": None})
    isvc["spec"]["predictor"]["model"] = {
        "modelFormat": {"name": "xgboost"},
        "storageUri": "s3://bucket/models/fraud-detector/v1/",
    }
    api = FakeKubeAPI(isvc)
    try:
        kube_target(api, uri_for=lambda v: f"s3://bucket/models/fraud-detector/{v}/").start("v2", 5)
    finally:
        api.close()
    assert api.patches[0][2]["spec"] == {
        "predictor": {
            "canaryTrafficPercent": 5,
            "model": {"storageUri": "s3://bucket/models/fraud-detector/v2/"},
        }
    }


@pytest.mark.parametrize(
    ("changes", "cluster_default", "match"),
    [
        (
            {"metadata.annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}},
            None,
            r"runs in RawDeployment mode \(annotation serving.kserve.io/deploymentMode\)",
        ),
        (
            {"status.deploymentMode": "Standard"},
            None,
            r"runs in Standard mode \(status.deploymentMode\)",
        ),
        (
            {"metadata.annotations": None, "status.components": None},
            "RawDeployment",
            r"runs in RawDeployment mode \(the cluster default",
        ),
        (
            {"metadata.annotations": None, "status.components": None},
            None,
            r"cannot tell its deployment mode .* Set the annotation serving\.kserve\.io/deploy",
        ),
    ],
)
def test_cluster_refuses_modes_where_canary_traffic_does_nothing(changes, cluster_default, match):
    api = FakeKubeAPI(manifest_isvc(**changes), cluster_default=cluster_default)
    try:
        target = kube_target(api)
        with pytest.raises(UnsupportedDeploymentError, match=match) as refused:
            target.start("v4", 10)
        message = str(refused.value)
        assert "Gateway API HTTPRoute" in message and "Knative" in message
        assert api.patches == []
        assert target.state().details["mode"] in ("RawDeployment", "Standard", None)
    finally:
        api.close()


def test_cluster_accepts_the_legacy_serverless_name_and_the_cluster_default():
    for changes, default in (
        ({"metadata.annotations": {"serving.kserve.io/deploymentMode": "Serverless"}}, None),
        ({"metadata.annotations": None, "status.components": None}, "Serverless"),
    ):
        api = FakeKubeAPI(manifest_isvc(**changes), cluster_default=default)
        try:
            assert kube_target(api).start("v4", 10).canary.version == "v4"
        finally:
            api.close()


def test_cluster_guards_and_errors_name_the_problem(kube):
    target = kube_target(kube)
    with pytest.raises(NoCanaryError, match="no canary started by this tool"):
        target.set_traffic(50)
    kube.isvc["spec"]["predictor"]["canaryTrafficPercent"] = 30
    with pytest.raises(CanaryExistsError, match="canaryTrafficPercent 30 set outside this tool"):
        target.start("v4", 10)
    kube.isvc["spec"]["predictor"].pop("canaryTrafficPercent")
    with pytest.raises(RolloutError, match="already serves v1"):
        target.start("v1", 10)
    target.start("v4", 10)
    with pytest.raises(CanaryExistsError, match=r"already has a canary \(v4 at 10%\)"):
        target.start("v3", 10)
    with pytest.raises(TargetUnavailableError, match=r"404 .*is it deployed"):
        kube_target(kube, name="missing").state()


def test_cluster_concurrent_edit_is_refused_not_overwritten(kube):
    kube.after_get = lambda isvc: isvc["metadata"].update(resourceVersion="99")
    with pytest.raises(TargetUnavailableError, match=r"409 .*changed by someone else"):
        kube_target(kube).start("v4", 10)
    assert kube.isvc["spec"]["predictor"]["containers"] == containers_with(V1)


def test_cluster_without_a_storage_uri_says_where_it_looked():
    isvc = manifest_isvc()
    isvc["spec"]["predictor"]["containers"][0]["env"] = []
    api = FakeKubeAPI(isvc)
    try:
        with pytest.raises(RolloutError, match="storageUri or a STORAGE_URI"):
            kube_target(api).start("v4", 10)
    finally:
        api.close()


def test_cluster_waits_for_the_new_revision():
    clock = {"now": 0.0}

    def sleep(seconds: float) -> None:
        clock["now"] += seconds

    api = FakeKubeAPI(manifest_isvc(), auto_ready=False)
    try:
        target = kube_target(api)
        target.start("v4", 10)
        assert target.wait_ready(30, sleep, lambda: clock["now"]) is False
        assert clock["now"] == 30
        status = api.isvc["status"]
        status["components"]["predictor"]["latestReadyRevision"] = "fraud-detector-predictor-00002"
        status["observedGeneration"] = 2
        assert target.wait_ready(30, sleep, lambda: clock["now"]) is True
    finally:
        api.close()


def isvc_split(api: FakeKubeAPI):
    def split() -> tuple[str, str | None, int]:
        isvc = api.isvc
        current = isvc["spec"]["predictor"]["containers"][0]["env"][0]["value"].rsplit("/", 1)[1]
        stable = isvc["metadata"]["annotations"].get(STABLE_ANNOTATION)
        if not stable:
            return current, None, 0
        percent = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        return stable.rsplit("/", 1)[1], current, 100 if percent is None else percent

    return split


def test_cluster_rollout_without_prometheus_judges_from_the_log(tmp_path, kube):
    store = registry(tmp_path, "fraud-detector")
    traffic = SimulatedTraffic(store, "fraud-detector", isvc_split(kube), rate=100)
    result = run_rollout(
        kube_target(kube),
        LogOnlyMetrics(),
        store=store,
        model="fraud-detector",
        version="v2",
        step_seconds=60,
        log_delay_seconds=0,
        log=lambda line: None,
        clock=traffic.clock,
        sleep=traffic.sleep,
    )
    assert result.outcome == "promoted", result.reason
    assert [
        p[2]["spec"]["predictor"].get("canaryTrafficPercent", "removed") for p in kube.patches
    ] == [
        10,
        50,
        None,
    ]
    verdict = result.steps[0].verdict
    assert verdict.check("error_rate").status == "skipped"
    assert "no Prometheus configured" in verdict.check("error_rate").explanation
    assert verdict.check("latency_p99").status == "pass"  # from the logged latency
    assert verdict.canary["requests"] is None and verdict.canary["transactions"] > 450
    assert resolve(store, "fraud-detector", "champion") == "v2"


# -- the CLI -----------------------------------------------------------------------------------

runner = CliRunner()


def cli(*args: str):
    from fraudops.cli import app

    return runner.invoke(app, ["rollout", *args], catch_exceptions=False)


@pytest.mark.parametrize("command", [[], ["start"], ["status"], ["promote"], ["rollback"]])
def test_every_rollout_command_has_help(command):
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: fraudops rollout" in result.output


def test_cli_status_rollback_and_errors(gateway, store):
    base = ["--gateway", gateway.url, "--store", store.uri, "--model-name", MODEL]
    result = cli("status", *base)
    assert result.exit_code == 0, result.output
    assert "stable" in result.output and "v1" in result.output
    assert "no rollout of fraud in the audit log yet" in result.output
    roll(gateway, store, "v3", {"v3": "alerts"})
    result = cli("status", *base)
    assert "ROLLED BACK" in result.output and "FAILED" in result.output
    assert "rolled back automatically at" in result.output
    result = cli("status", *base, "--json")
    assert '"outcome": "rolled back"' in result.output
    LocalGatewayTarget(gateway.url).start("v2", 25)
    result = cli("rollback", *base, "--reason", "test")
    assert result.exit_code == 0, result.output
    assert "rolled back v2: v1 serves all traffic" in result.output
    result = cli("rollback", *base)
    assert result.exit_code == 2
    assert "has no canary to roll back" in result.output
    result = cli("start", *base, "--version", "v2", "--steps", "50,10")
    assert result.exit_code == 2 and "shares must increase" in result.output


def test_cli_start_refuses_a_bad_threshold_file(gateway, store, tmp_path):
    config = tmp_path / "t.yaml"
    config.write_text("max_psi: 1\n")
    result = cli(
        "start",
        "--gateway",
        gateway.url,
        "--store",
        store.uri,
        "--model-name",
        MODEL,
        "--version",
        "v2",
        "--config",
        str(config),
    )
    assert result.exit_code == 2
    assert "unknown threshold(s) max_psi" in result.output
    assert gateway.posts == []


def live_traffic(gateway: FakeGateway, store: ObjectStore, behaviour: dict[str, str]):
    """Clients on the real clock (for the CLI, which waits for real)."""
    traffic = SimulatedTraffic(
        store, MODEL, gateway.split, behaviour, rate=400, record=gateway.record
    )
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            traffic.now = time.time()
            traffic.sleep(0.05)
            stop.wait(0.05)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return stop, thread


@pytest.mark.parametrize(
    ("version", "behaviour", "exit_code", "word"),
    [
        ("v2", {}, 0, "PROMOTED"),
        ("v3", {"v3": "alerts"}, 3, "ROLLED BACK"),
    ],
)
def test_cli_start_promotes_or_rolls_back_with_the_exit_code(
    gateway, store, tmp_path, version, behaviour, exit_code, word
):
    config = tmp_path / "t.yaml"
    config.write_text("min_requests: 5\nmin_transactions: 5\n")
    stop, thread = live_traffic(gateway, store, behaviour)
    try:
        result = cli(
            "start",
            "--gateway",
            gateway.url,
            "--store",
            store.uri,
            "--model-name",
            MODEL,
            "--version",
            version,
            "--steps",
            "50,100",
            "--step-seconds",
            "0.5",
            "--log-delay",
            "0.2",
            "--max-extensions",
            "5",
            "--config",
            str(config),
        )
    finally:
        stop.set()
        thread.join(10)
    assert result.exit_code == exit_code, result.output
    assert word in result.output
    assert gateway.split()[1] is None


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "me", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
                "current-context": "fake",
            }
        )
    )
    return path


def test_connect_with_a_kubeconfig_and_name_a_missing_one(tmp_path, kube):
    target = InferenceServiceTarget.connect(
        "fraud-detector", "fraudops", kubeconfig=str(kubeconfig(tmp_path, kube.url))
    )
    assert target.state().stable.version == "v1"
    with pytest.raises(TargetUnavailableError, match="no usable Kubernetes configuration"):
        InferenceServiceTarget.connect("x", "y", kubeconfig=str(tmp_path / "nowhere"))


def test_cli_cluster_status_and_refusal(tmp_path):
    store = registry(tmp_path, "fraud-detector")
    mode = {"serving.kserve.io/deploymentMode": "Standard"}
    api = FakeKubeAPI(manifest_isvc(**{"metadata.annotations": mode}))
    try:
        config = str(kubeconfig(tmp_path, api.url))
        base = ["--cluster", "--kubeconfig", config, "--store", store.uri]
        result = cli("status", *base, "--model-name", "fraud-detector")
        assert result.exit_code == 0, result.output
        assert "InferenceService fraudops/fraud-detector" in result.output
        assert '"mode": "Standard"' in result.output
        result = cli("start", *base, "--model-name", "fraud-detector", "--version", "v2")
        assert result.exit_code == 2
        assert result.output.startswith("error: InferenceService fraudops/fraud-detector runs in")
        assert "Standard mode" in result.output and "HTTPRoute" in result.output
        assert api.patches == []
    finally:
        api.close()
