"""The local canary gateway (``python -m serving.gateway``) as real processes on loopback.

One gateway process for the module launches the stable model server (``python -m serving``) for
a tiny model trained in the session; the same bundle is registered twice more in a copy of the
store: ``v2`` (the canary) and ``v3`` (then damaged, so that its server refuses to start).
Failing canaries are small real HTTP servers in this process, attached by URL. The tests run in
file order: the canary is promoted near the end, and the last test stops the gateway with
SIGTERM. The first tests exercise the pure parts (routing, drain, stats) in-process.
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import time
import uuid
from collections import Counter
from types import SimpleNamespace

import httpx
import pytest
from gateway_helpers import (
    MODEL,
    V1,
    V2,
    FailingBackend,
    GatewayProcess,
    Traffic,
    register_copy,
    rows_after_training,
)
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import shared_model
from serving_helpers import tensors as to_tensors

from components.inference_log import read_records
from components.store import LocalStore
from serving.gateway import _join_server_args, main
from serving.gateway_proxy import forward_headers
from serving.gateway_routing import Backend, Router, RoutingTable, check_backend_url
from serving.gateway_stats import BackendStats, EventTimes, Outcome, classify

# -- pure parts ---------------------------------------------------------------------------


def _binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def test_router_splits_by_weight_and_swaps_tables_whole():
    stable, canary = Backend("v1", "http://s"), Backend("v2", "http://c")
    router = Router(RoutingTable(stable, canary, 30), random.Random(3))
    roles = Counter(router.choose()[1] for _ in range(2000))
    low, high = _binomial_bounds(2000, 0.3)
    assert low <= roles["canary"] <= high
    assert stable.in_flight + canary.in_flight == 2000
    router.table = RoutingTable(stable, canary, 0)
    assert {router.choose()[1] for _ in range(200)} == {"stable"}
    router.table = RoutingTable(stable, canary, 100)
    assert {router.choose()[1] for _ in range(200)} == {"canary"}
    with pytest.raises(ValueError, match=r"percent must be within 0\.\.100"):
        RoutingTable(stable, canary, 101)
    with pytest.raises(ValueError, match="percent must be 0 without a canary"):
        RoutingTable(stable, None, 10)
    with pytest.raises(TypeError, match="percent must be an int"):
        RoutingTable(stable, canary, True)


def test_drain_waits_for_routed_requests_and_retry_avoids_the_failed_backend():
    async def scenario() -> list[str]:
        events: list[str] = []
        old, new = Backend("v1", "http://s"), Backend("v2", "http://c")
        router = Router(RoutingTable(old, new, 100))
        backend, role, routed = router.choose()  # routed to the canary
        assert (backend, role) == (new, "canary")
        old_request = Router(RoutingTable(old)).choose()[0]  # one request in flight on v1
        router.table = RoutingTable(new)  # promote: v1 leaves the table

        async def finish_later() -> None:
            await asyncio.sleep(0)
            events.append("request finished")
            old_request.leave()

        task = asyncio.create_task(finish_later())
        # the canary request failed after the promotion: retry on the old stable, still there
        assert router.retry_target(new, routed) is old
        old.leave()
        drained = await old.drain(timeout=5.0)
        events.append(f"drained={drained}")
        await task
        # once drained, nothing may enter the old backend any more
        assert router.retry_target(new, routed) is None and old.closing
        return events

    assert asyncio.run(scenario()) == ["request finished", "drained=True"]


def test_drain_gives_up_at_its_timeout():
    async def scenario() -> bool:
        backend = Backend("v1", "http://s")
        backend.enter()
        return await backend.drain(timeout=0.0)

    assert asyncio.run(scenario()) is False


def test_stats_count_by_outcome_in_a_window_and_keep_only_recent_latencies():
    stats = BackendStats(capacity=4)
    for t, latency, outcome in [
        (10.0, 5.0, Outcome.OK),
        (11.0, 7.0, Outcome.CLIENT_ERROR),
        (12.0, 1.0, Outcome.SERVER_ERROR),
        (13.0, 30_000.0, Outcome.TIMEOUT),
        (14.0, 9.0, Outcome.OK),
        (15.0, 2.0, Outcome.CONNECTION_ERROR),
    ]:
        stats.record(t, latency, outcome)
    everything = stats.summary("v2")
    assert everything == {
        "version": "v2",
        "requests": 6,
        "errors_5xx": 1,
        "errors_connection": 2,
        "client_errors_4xx": 1,
        "latency_ms_p50": 9.0,  # answered (< 500) among the 4 kept: only 9.0
        "latency_ms_p99": 9.0,
    }
    window = stats.summary("v2", since=13.0)
    assert (window["requests"], window["errors_connection"], window["errors_5xx"]) == (3, 2, 0)
    assert stats.summary("v2", since=16.0)["latency_ms_p50"] is None
    times = EventTimes(capacity=3)
    for t in (1.0, 2.0, 3.0, 4.0):
        times.add(t)
    assert (times.count(), times.count(since=3.0), times.count(since=5.0)) == (4, 2, 0)
    assert [classify(s) for s in (200, 302, 404, 503)] == [
        Outcome.OK,
        Outcome.OK,
        Outcome.CLIENT_ERROR,
        Outcome.SERVER_ERROR,
    ]


def test_headers_urls_and_server_args():
    headers = [
        (b"Content-Type", b"application/json"),
        (b"connection", b"keep-alive"),
        (b"host", b"gw"),
        (b"content-length", b"12"),
        (b"ce-id", b"abc"),
        (b"transfer-encoding", b"chunked"),
    ]
    assert forward_headers(headers) == [(b"content-type", b"application/json"), (b"ce-id", b"abc")]
    assert check_backend_url(" http://127.0.0.1:9000/ ") == "http://127.0.0.1:9000"
    for bad, message in [
        ("127.0.0.1:9000", "not a backend URL"),
        ("ftp://h:1", "not a backend URL"),
        ("http://h:1/?a=1", "no query"),
        ("http://h:99999", "Port out of range"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_backend_url(bad)
    assert main(["--model_uri", "/no/such/folder", "--port", "1"]) == 2  # before any launch
    assert _join_server_args(["--port", "1", "--server_arg", "--x", "--server_arg", "y"]) == [
        "--port",
        "1",
        "--server_arg=--x",
        "--server_arg=y",
    ]


# -- processes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A copy of the session's store with v2 (same model) and v3 (damaged) registered."""
    trained = shared_model(tmp_path_factory, MODEL)
    folder = tmp_path_factory.mktemp("gateway")
    store_dir = folder / "store"
    shutil.copytree(trained.store, store_dir)
    store = LocalStore(store_dir)
    canary = register_copy(store, trained.version, folder / "b1")
    broken = register_copy(store, trained.version, folder / "b2")
    (store_dir / "models" / MODEL / broken / "model" / "model.json").write_bytes(b"{}")
    return SimpleNamespace(
        store=store_dir,
        stable=trained.version,
        canary=canary,
        broken=broken,
        log_store=folder / "log",
        folder=folder,
    )


@pytest.fixture(scope="module")
def gateway(models):
    server_args = [
        *("--log_store", str(models.log_store)),
        *("--log_flush_interval", "600"),  # records reach the store only when a server stops
        *("--access_logging", "false"),
        *("--reasons_for", "alerts"),
    ]
    proc = GatewayProcess(
        [
            *("--model_uri", f"{models.store}#{MODEL}:champion"),
            *("--log_dir", str(models.folder / "logs")),
            *("--access_logging", "false"),
            *("--seed", "7"),
            *(a for arg in server_args for a in ("--server_arg", arg)),
        ],
        models.folder / "gateway.log",
    )
    try:
        proc.wait_ready(180)
        yield proc
    finally:
        proc.stop(60)


@pytest.fixture
def admin(gateway):
    """An HTTP client for the gateway; a canary left by a failed test is rolled back."""
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        yield client
        if gateway.proc.poll() is None and client.get("/rollout").json()["canary"] is not None:
            client.post("/rollout/rollback")


def _tx(tid: str, customer: str, terminal: str, amount: float = 42.0) -> dict:
    return {
        "transaction_id": tid,
        "timestamp": "2026-05-16T00:00:00Z",
        "customer_id": customer,
        "terminal_id": terminal,
        "amount": amount,
    }


def _fresh(tag: str) -> str:
    return f"gw-{tag}-{uuid.uuid4().hex[:8]}"


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# -- serving through the gateway ----------------------------------------------------------


def test_gateway_answers_exactly_what_the_stable_server_answers(gateway, admin, models):
    doc = admin.get("/rollout").json()
    assert doc["model"] == MODEL and doc["canary"] is None
    assert doc["stable"]["version"] == models.stable  # the alias champion, resolved
    direct = httpx.Client(base_url=doc["stable"]["url"], timeout=30)
    with direct:
        for path in (f"/v2/models/{MODEL}", f"/v1/models/{MODEL}", "/v2/health/ready"):
            via, own = admin.get(path), direct.get(path)
            assert via.status_code == own.status_code == 200
            assert via.content == own.content
            assert via.headers["x-fraudops-version"] == models.stable
            assert via.headers["content-type"] == own.headers["content-type"]
        # the same transaction id for two fresh customers and terminals (no history either way)
        # scores the same: the bodies must be byte for byte the same
        tid = _fresh("same")
        own = direct.post(V1, json={"instances": [_tx(tid, _fresh("c"), _fresh("t"))]})
        via = admin.post(V1, json={"instances": [_tx(tid, _fresh("c"), _fresh("t"))]})
        assert via.status_code == own.status_code == 200
        assert via.content == own.content
        assert via.headers["x-fraudops-backend"] == "stable"
        assert via.headers["x-fraudops-version"] == via.json()["model_version"] == models.stable
        body = {"id": tid, "inputs": to_tensors([_tx(tid, _fresh("c"), _fresh("t"))])}
        own = direct.post(V2, json=body)
        body["inputs"] = to_tensors([_tx(tid, _fresh("c"), _fresh("t"))])
        via = admin.post(V2, json=body)
        assert via.status_code == own.status_code == 200
        assert via.content == own.content
    assert admin.get("/v2/health/live").json() == {"live": True}
    missing = admin.post("/v1/models/other:predict", json={"instances": []})
    assert missing.status_code == 404
    assert missing.json() == {"error": "Model with name other does not exist."}


def test_a_bad_transaction_is_passed_through_and_never_retried(admin, models):
    bad = {"instances": [{"transaction_id": "x", "timestamp": "2026-05-16T00:00:00Z"}]}
    stable_url = admin.get("/rollout").json()["stable"]["url"]
    since = time.time()
    via = admin.post(V1, json=bad)
    own = httpx.post(stable_url + V1, json=bad, timeout=30)
    assert via.status_code == own.status_code == 400
    assert via.content == own.content and "customer_id" in via.json()["error"]
    stats = admin.get("/rollout/stats", params={"since": since}).json()
    assert stats["stable"]["client_errors_4xx"] == 1
    assert stats["stable"]["errors_5xx"] == stats["stable"]["errors_connection"] == 0
    # a canary answering 4xx: the client gets it as it is, nothing is retried
    canary = FailingBackend("400")
    try:
        since = time.time()
        r = admin.post(
            "/rollout/canary", json={"version": "v400", "url": canary.url, "percent": 100}
        )
        assert r.status_code == 200, r.text
        answers = [
            admin.post(V1, json={"instances": [_tx(_fresh("4"), "c", "t")]}) for _ in range(5)
        ]
        assert [a.status_code for a in answers] == [400] * 5
        assert {a.headers["x-fraudops-backend"] for a in answers} == {"canary"}
        assert answers[0].json() == {"error": "failing backend (400)"}
        stats = admin.get("/rollout/stats", params={"since": since}).json()
        assert stats["canary"]["client_errors_4xx"] == 5 and stats["canary"]["errors_5xx"] == 0
        assert stats["retried_on_stable"] == 0 and stats["stable"]["requests"] == 0
        assert admin.post("/rollout/rollback").json()["canary"] is None
    finally:
        canary.close()


# -- the admin API ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/rollout/canary", {}, 422, "version: required"),
        ("/rollout/canary", {"version": "v2"}, 422, "percent: required"),
        ("/rollout/canary", {"version": "v2", "percent": 101}, 422, "percent"),
        ("/rollout/canary", {"version": "v2", "percent": 50.5}, 422, "percent"),
        ("/rollout/canary", {"version": "v2", "percent": True}, 422, "percent"),
        ("/rollout/canary", {"version": "", "percent": 5}, 422, "version"),
        ("/rollout/canary", {"version": "v 2", "percent": 5}, 422, "version"),
        ("/rollout/canary", {"version": "v2", "percent": 5, "url": "ftp://h:1"}, 422, "url"),
        ("/rollout/canary", {"version": "v2", "percent": 5, "colour": "red"}, 422, "colour"),
        ("/rollout/canary", {"version": "v99", "percent": 5}, 422, "version: model 'fraud' has"),
        ("/rollout/canary", {"version": "champion", "percent": 5}, 422, "is the stable version"),
        ("/rollout/canary", [1], 400, "JSON object"),
        ("/rollout/traffic", {"percent": -1}, 422, "percent"),
        ("/rollout/traffic", {"percent": "50"}, 422, "percent"),
        ("/rollout/traffic", {}, 422, "percent: required"),
        ("/rollout/traffic", b'{"percent": 5', 400, "not valid JSON"),
    ],
)
def test_bad_admin_input_is_refused_naming_the_field(admin, path, body, status, field):
    if isinstance(body, bytes):
        r = admin.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = admin.post(path, json=body)
    assert r.status_code == status, r.text
    assert field in r.json()["error"]
    assert admin.get("/rollout").json()["canary"] is None


def test_conflicts_are_409_and_a_bad_window_is_422(admin):
    for action in ("/rollout/traffic", "/rollout/promote", "/rollout/rollback"):
        body = {"percent": 10} if action.endswith("traffic") else None
        r = admin.post(action, json=body)
        assert r.status_code == 409 and "no canary" in r.json()["error"]
    canary = FailingBackend("500")
    try:
        assert (
            admin.post(
                "/rollout/canary", json={"version": "vx", "url": canary.url, "percent": 0}
            ).status_code
            == 200
        )
        again = admin.post("/rollout/canary", json={"version": "v2", "percent": 10})
        assert again.status_code == 409 and "already deployed" in again.json()["error"]
        assert admin.post("/rollout/rollback").status_code == 200
        assert canary.hits == 0  # at 0% nothing went there
    finally:
        canary.close()
    r = admin.get("/rollout/stats", params={"since": "yesterday"})
    assert r.status_code == 422 and "since" in r.json()["error"]


# -- failing canaries ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["500", "close"])
def test_a_failing_canary_never_reaches_the_client_and_is_counted(gateway, admin, models, mode):
    canary = FailingBackend(mode)
    since = time.time()
    try:
        r = admin.post(
            "/rollout/canary", json={"version": f"bad{mode}", "url": canary.url, "percent": 50}
        )
        assert r.json()["canary"]["percent"] == 50
        traffic = Traffic(gateway.url, rows_after_training(60, seed=20 + len(mode)), threads=2)
        traffic.wait_for(30)
        # canary failures and retries are counted together: they always agree
        stats = admin.get("/rollout/stats", params={"since": since}).json()
        failed = stats["canary"]["errors_5xx"] + stats["canary"]["errors_connection"]
        assert failed > 0 and stats["retried_on_stable"] == failed
        assert stats["canary"]["requests"] == failed
        assert stats["canary"]["latency_ms_p99"] is None
        rolled = admin.post("/rollout/rollback")  # while the clients keep sending
        traffic.wait_for(60)
        results = traffic.stop()
    finally:
        canary.close()
    assert rolled.status_code == 200 and rolled.json()["canary"] is None
    assert Traffic.failures(results) == [] and len(results) == 60
    assert {r[2] for r in results} == {models.stable}  # every answer came from stable
    retried = [r for r in results if r[3]]
    assert retried and {r[3] for r in retried} == {f"bad{mode}"}
    # the canary is gone from the stats document after the rollback; its failures were
    # counted before (the metrics keep them per version)
    stats = admin.get("/rollout/stats", params={"since": since}).json()
    assert stats["canary"] is None
    assert stats["retried_on_stable"] == len(retried) == canary.hits
    assert stats["stable"]["requests"] == 60 and stats["stable"]["errors_5xx"] == 0
    metrics = admin.get("/metrics").text
    outcome = "server_error" if mode == "500" else "connection_error"
    failures = _metric(
        metrics, "fraudops_gateway_requests_total", version=f"bad{mode}", outcome=outcome
    )
    assert failures == len(retried)
    assert _metric(metrics, "fraudops_gateway_retries_total", version=f"bad{mode}") == failures
    assert _metric(metrics, "fraudops_gateway_canary_percent") == 0


def test_stats_see_canary_errors_while_it_is_deployed(gateway, admin):
    canary = FailingBackend("500")
    try:
        since = time.time()
        admin.post("/rollout/canary", json={"version": "bad", "url": canary.url, "percent": 100})
        for _ in range(8):
            assert admin.post(V1, json={"instances": [_tx(_fresh("s"), "c", "t")]}).is_success
        stats = admin.get("/rollout/stats", params={"since": since}).json()
        assert stats["canary"] == {
            "version": "bad",
            "requests": 8,
            "errors_5xx": 8,
            "errors_connection": 0,
            "client_errors_4xx": 0,
            "latency_ms_p50": None,
            "latency_ms_p99": None,
        }
        assert stats["retried_on_stable"] == 8 and stats["stable"]["requests"] == 8
        assert stats["stable"]["latency_ms_p50"] > 0 and stats["now"] >= since
        later = admin.get("/rollout/stats", params={"since": stats["now"]}).json()
        assert later["canary"]["requests"] == later["retried_on_stable"] == 0
        assert admin.post("/rollout/rollback").status_code == 200
    finally:
        canary.close()


def test_a_canary_that_cannot_start_leaves_nothing_behind(admin, models):
    r = admin.post("/rollout/canary", json={"version": models.broken, "percent": 10})
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error.startswith(f"canary not deployed: the model server for {models.store}")
    assert "exited with code 1" in error and "model/model.json" in error  # the log's tail
    assert admin.get("/rollout").json()["canary"] is None
    assert all(b["role"] != "canary" for b in admin.get("/rollout/backends").json()["backends"])


# -- a real canary: weights, promotion under traffic --------------------------------------


def test_canary_gets_its_share_and_is_promoted_under_traffic(gateway, admin, models):
    r = admin.post("/rollout/canary", json={"version": models.canary, "percent": 50})
    assert r.status_code == 200, r.text
    canary_url = r.json()["canary"]["url"]
    assert httpx.get(canary_url + f"/v2/models/{MODEL}", timeout=10).json()["name"] == MODEL
    # enough rows to keep sending through the promotion (which drains and stops a server)
    traffic = Traffic(gateway.url, rows_after_training(3000, seed=31, days=6), threads=2)
    traffic.wait_for(200)
    promoted_at = time.time()
    promoted = admin.post("/rollout/promote")  # the clients keep sending
    after_promote = time.time()
    traffic.wait_for(len(traffic.results) + 40)
    results = traffic.stop()
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["stable"] == {"version": models.canary, "url": canary_url}
    assert promoted.json()["canary"] is None
    assert Traffic.failures(results) == []
    before = [r for r in results if r[0] < promoted_at]
    assert len(before) >= 200
    low, high = _binomial_bounds(len(before), 0.5)
    by_version = Counter(r[2] for r in before)
    assert set(by_version) == {models.stable, models.canary}
    assert low <= by_version[models.canary] <= high, by_version
    assert {r[2] for r in results if r[0] > after_promote} == {models.canary}
    # the old stable was drained, stopped with SIGTERM and exited cleanly...
    old = [b for b in admin.get("/rollout/backends").json()["backends"] if b["role"] == "retired"]
    old = [b for b in old if b["version"] == models.stable]
    assert len(old) == 1 and old[0]["running"] is False and old[0]["exit_code"] == 0
    # ...so every transaction it scored is in the inference log now
    logged = {
        r["transaction"]["transaction_id"]
        for r in read_records(LocalStore(models.log_store), MODEL, models.stable)
    }
    served_by_old = {r[4] for r in results if r[2] == models.stable}
    assert served_by_old and served_by_old <= logged
    assert not logged & {r[4] for r in results if r[2] == models.canary}


def test_sigterm_stops_the_gateway_and_its_servers_cleanly(gateway, admin, models):
    doc = admin.get("/rollout").json()
    stable = doc["stable"]["version"]
    tids = [_fresh("last") for _ in range(3)]
    for tid in tids:
        r = admin.post(V1, json={"instances": [_tx(tid, _fresh("c"), _fresh("t"))]})
        assert r.status_code == 200 and r.headers["x-fraudops-version"] == stable
    running = [b for b in admin.get("/rollout/backends").json()["backends"] if b["running"]]
    assert [b["version"] for b in running] == [stable]
    assert gateway.stop(60) == 0, gateway.output()
    output = gateway.output()
    assert f"(pid {running[0]['pid']}): exit code 0" in output
    logged = {
        r["transaction"]["transaction_id"]
        for r in read_records(LocalStore(models.log_store), MODEL, stable)
    }
    assert set(tids) <= logged
