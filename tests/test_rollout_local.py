"""Issue #6's proof: canary rollouts through the real gateway, decided by the real analysis.

A gateway process (``python -m serving.gateway``) serves a tiny model trained in the session;
client threads send transactions through it for the whole rollout. A good canary (the same
model, registered again) is promoted to 100%; a bad one (a bundle whose threshold makes it flag
everything) is rolled back by the analysis. The clients see zero failed requests in both cases.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from gateway_helpers import MODEL, GatewayProcess, Traffic, register_copy, rows_after_training
from serving_helpers import shared_model

from components.audit import read_audit
from components.bundle import BundleError, fetch_bundle, register_bundle, resolve
from components.store import LocalStore
from monitoring.canary import CanaryThresholds
from monitoring.rollout import GatewayMetrics, LocalGatewayTarget, run_rollout

THRESHOLDS = CanaryThresholds(min_requests=20, min_transactions=40)


def _register_flag_everything(store: LocalStore, version: str, dest: Path) -> str:
    """The same model with a threshold of 0: every transaction is an alert."""
    bundle = fetch_bundle(store, MODEL, version, dest)
    threshold = json.loads((bundle.folder / "threshold.json").read_text())
    (bundle.folder / "threshold.json").write_text(json.dumps({**threshold, "threshold": 0.0}))
    skip = {"name", "version", "created_at", "code_version", "files"}
    provenance = {k: v for k, v in bundle.manifest.items() if k not in skip}
    return register_bundle(store, MODEL, bundle.folder, {**provenance, "parent_version": version})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    trained = shared_model(tmp_path_factory, MODEL)
    folder = tmp_path_factory.mktemp("rollout")
    store_dir = folder / "store"
    shutil.copytree(trained.store, store_dir)
    store = LocalStore(store_dir)
    good = register_copy(store, trained.version, folder / "good")
    bad = _register_flag_everything(store, trained.version, folder / "bad")
    server_args = ["--log_flush_interval", "0.3", "--reasons_for", "alerts"]
    gateway = GatewayProcess(
        [
            *("--model_uri", f"{store_dir}#{MODEL}:champion"),
            *("--log_dir", str(folder / "logs")),
            *("--access_logging", "false"),
            *(a for arg in server_args for a in ("--server_arg", arg)),
        ],
        folder / "gateway.log",
    )
    try:
        gateway.wait_ready(180)
        yield SimpleNamespace(
            store=store, stable=trained.version, good=good, bad=bad, gateway=gateway
        )
    finally:
        gateway.stop(60)


def _rollout(setup, version: str, seed: int):
    # 300 requests a second for up to 67 s: beyond the longest rollout here (a new server
    # starting, then two steps of up to 4 windows each); unpaced, a fast machine used up
    # 6,000 rows before the 50% step and its windows held no traffic
    rows = rows_after_training(20_000, seed=seed, days=10)
    traffic = Traffic(setup.gateway.url, rows, threads=2, per_second=300)
    try:
        traffic.wait_for(20)  # the stable server answers before the canary arrives
        result = run_rollout(
            LocalGatewayTarget(setup.gateway.url),
            GatewayMetrics(setup.gateway.url),
            store=setup.store,
            model=MODEL,
            version=version,
            steps=(25, 50, 100),
            step_seconds=3.0,
            thresholds=THRESHOLDS,
            log_delay_seconds=1.0,
            max_extensions=3,
            log=print,
        )
    finally:
        results = traffic.stop()
    return result, results


def test_a_good_canary_is_promoted_and_no_client_request_fails(setup):
    result, results = _rollout(setup, setup.good, seed=11)
    assert result.promoted, result.reason
    assert [s.percent for s in result.steps if s.verdict.status == "passed"] == [25, 50]
    assert Traffic.failures(results) == []
    served = {r[2] for r in results}
    assert {setup.stable, setup.good} <= served  # both versions answered clients
    assert resolve(setup.store, MODEL, "champion") == setup.good
    promote = read_audit(setup.store, "rollout.promote")[-1]
    assert promote["inputs"]["canary"] == setup.good
    # after the promotion only the new version answers
    state = LocalGatewayTarget(setup.gateway.url).state()
    assert state.stable.version == setup.good and state.canary is None
    setup.stable = setup.good


def test_a_canary_that_flags_everything_is_rolled_back_and_no_client_request_fails(setup):
    result, results = _rollout(setup, setup.bad, seed=12)
    assert not result.promoted
    failed = [s for s in result.steps if s.verdict.status == "failed"]
    assert failed and failed[0].percent == 25  # stopped at the first step
    alert_rate = failed[0].verdict.check("alert_rate_ratio")
    assert alert_rate is not None and not alert_rate.ok
    assert alert_rate.value > THRESHOLDS.max_alert_rate_ratio
    assert Traffic.failures(results) == []
    assert resolve(setup.store, MODEL, "champion") == setup.stable
    with pytest.raises(BundleError, match="no alias 'canary'"):  # cleared with the rollback
        resolve(setup.store, MODEL, "canary")
    rollback = read_audit(setup.store, "rollout.rollback")[-1]
    assert rollback["inputs"]["canary"] == setup.bad
    state = LocalGatewayTarget(setup.gateway.url).state()
    assert state.stable.version == setup.stable and state.canary is None
