"""Canary rollouts: deploy a version beside the stable one, walk the traffic steps, judge each.

:func:`run_rollout` is the whole automated rollout on any target (the local gateway or a KServe
InferenceService) with any metrics source::

    target = LocalGatewayTarget("http://127.0.0.1:8080")
    result = run_rollout(target, GatewayMetrics(target), store=store, model="fraud-detector",
                         version="v4", steps=(10, 50, 100), step_seconds=60)

1. Check the version is registered and no canary is running; deploy it as the canary with the
   first step's share; point the alias ``canary`` at it; wait until it serves.
2. For each step below 100%: set the share, let traffic flow for ``step_seconds``, then
   compare canary and stable on that window (:func:`monitoring.canary.analyse`): errors and
   latency from the metrics source, scores and decisions from the inference log, precision and
   recall once labels have arrived. Every decision, with all its numbers, goes to the audit log
   (``rollout.step``).
3. A failed step rolls back at once. An inconclusive one (too little traffic, or a score or
   alert-rate difference that could be chance) extends its window by ``step_seconds`` up to
   ``max_extensions`` times, and then rolls back: without evidence the canary is not trusted.
4. After the last step passes: promote (100% to the canary, which becomes stable), point the
   alias ``champion`` at it. Reaching 100% is the promotion; a share of 100 in ``steps`` is
   optional and is never analysed, since no stable traffic is left to compare with.

An error or Ctrl-C after the canary was deployed rolls back too. Audit events: ``rollout.start``,
``rollout.step``, ``rollout.promote``, ``rollout.rollback``, all with the ``rollout_id``.
:func:`promote`, :func:`rollback` and :func:`status` are the manual commands.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from components.audit import read_audit, record_event
from components.bundle import BundleError, remove_alias, resolve, set_alias
from components.store import ObjectStore
from monitoring.canary import CanaryThresholds, CanaryVerdict, analyse, read_windows
from monitoring.rollout_base import (
    Backend,
    CanaryExistsError,
    NoCanaryError,
    RolloutError,
    RolloutTarget,
    TargetState,
    TargetUnavailableError,
    UnsupportedDeploymentError,
)
from monitoring.rollout_local import LocalGatewayTarget
from monitoring.rollout_metrics import (
    GatewayMetrics,
    LogOnlyMetrics,
    MetricsError,
    MetricsSource,
    PrometheusMetrics,
)

__all__ = [
    "EVENTS",
    "Backend",
    "CanaryExistsError",
    "GatewayMetrics",
    "LocalGatewayTarget",
    "LogOnlyMetrics",
    "MetricsError",
    "MetricsSource",
    "NoCanaryError",
    "PrometheusMetrics",
    "RolloutError",
    "RolloutResult",
    "RolloutStatus",
    "RolloutTarget",
    "StepRecord",
    "TargetState",
    "TargetUnavailableError",
    "UnsupportedDeploymentError",
    "parse_steps",
    "promote",
    "rollback",
    "run_rollout",
    "status",
]

EVENTS = ("rollout.start", "rollout.step", "rollout.promote", "rollout.rollback")


@dataclass
class StepRecord:
    """One analysed window of one step.

    Attributes:
        percent: The canary's share during the window.
        attempt: 1 for the step's first window, 2+ for each extension.
        window_start: ISO time.
        window_end: ISO time.
        verdict: The analysis.
        audit_key: The ``rollout.step`` event's key.
    """

    percent: int
    attempt: int
    window_start: str
    window_end: str
    verdict: CanaryVerdict
    audit_key: str

    def summary(self) -> dict[str, Any]:
        """The step in one JSON-serialisable line: share, window, verdict, reason, audit key."""
        return {
            "percent": self.percent,
            "attempt": self.attempt,
            "window": [self.window_start, self.window_end],
            "status": self.verdict.status,
            "reason": self.verdict.reason,
            "audit_key": self.audit_key,
        }


@dataclass
class RolloutResult:
    """How a rollout ended.

    Attributes:
        rollout_id: Joins the rollout's audit events.
        model: Model name.
        stable_version: The version that was stable when the rollout started.
        canary_version: The version rolled out.
        outcome: ``promoted`` or ``rolled_back``.
        reason: One line: why.
        steps: Every analysed window, in order.
        state: The target's state at the end.
        audit_keys: Keys of every audit event written.
    """

    rollout_id: str
    model: str
    stable_version: str
    canary_version: str
    outcome: str
    reason: str
    steps: list[StepRecord] = field(default_factory=list)
    state: TargetState | None = None
    audit_keys: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        """Whether the canary now serves all traffic."""
        return self.outcome == "promoted"

    @property
    def decision(self) -> str:
        """Same as ``outcome``: ``promoted`` or ``rolled_back``."""
        return self.outcome


def parse_steps(steps: Sequence[int] | str) -> tuple[int, ...]:
    """Validate traffic steps (``"10,50,100"`` or a sequence): increasing shares in 1..100.

    Raises:
        RolloutError: a share is not a whole number in 1..100, the steps do not increase, or
            none is below 100.
    """
    if isinstance(steps, str):
        try:
            steps = [int(s) for s in steps.replace(" ", "").split(",") if s]
        except ValueError as e:
            raise RolloutError(
                f"steps {steps!r}: use comma-separated whole percentages, e.g. 10,50,100"
            ) from e
    values = tuple(int(s) for s in steps)
    if not values or any(not 1 <= s <= 100 for s in values):
        raise RolloutError(f"steps {list(values)}: each share must be between 1 and 100")
    if any(b <= a for a, b in pairwise(values)):
        raise RolloutError(f"steps {list(values)}: shares must increase, e.g. 10,50,100")
    if values[0] == 100:
        raise RolloutError(
            "steps [100]: at least one share below 100 is needed to compare the canary with "
            "the stable version, e.g. 10,50,100"
        )
    return values


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass
class _Rollout:
    """The state of one automated rollout (see :func:`run_rollout`)."""

    target: RolloutTarget
    metrics: MetricsSource
    store: ObjectStore
    model: str
    version: str
    stable: str
    rollout_id: str
    step_seconds: float
    thresholds: CanaryThresholds
    max_extensions: int
    log_delay_seconds: float
    use_labels: bool
    log: Callable[[str], None]
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    actor: str | None
    percent: int = 0
    records: list[StepRecord] = field(default_factory=list)
    audit_keys: list[str] = field(default_factory=list)

    def event(self, name: str, inputs: dict[str, Any], outcome: dict[str, Any]) -> str:
        key = record_event(
            self.store,
            name,
            {
                "rollout_id": self.rollout_id,
                "model": self.model,
                "stable": self.stable,
                "canary": self.version,
                "target": self.target.description,
                **inputs,
            },
            outcome,
            self.actor,
        )
        self.audit_keys.append(key)
        return key

    def judge(self, percent: int) -> CanaryVerdict:
        """Let traffic flow, analyse; extend the window while inconclusive (up to the limit)."""
        from monitoring.labels import load_labels

        start = self.clock()
        attempt = 0
        while True:
            attempt += 1
            self.sleep(max(0.0, start + self.step_seconds * attempt - self.clock()))
            end = self.clock()
            metrics = self.metrics.collect(self.model, self.stable, self.version, start, end)
            if self.log_delay_seconds:
                self.sleep(self.log_delay_seconds)  # the servers flush the log every few seconds
            labels = load_labels(self.store, self.model) if self.use_labels else None
            stable_window, canary_window = read_windows(
                self.store,
                self.model,
                self.stable,
                self.version,
                datetime.fromtimestamp(start, UTC),
                datetime.fromtimestamp(end, UTC),
                metrics,
                labels,
            )
            verdict = analyse(stable_window, canary_window, self.thresholds)
            key = self.event(
                "rollout.step",
                {
                    "percent": percent,
                    "attempt": attempt,
                    "window": {
                        "start": _iso(start),
                        "end": _iso(end),
                        "seconds": round(end - start, 3),
                    },
                    "metrics_source": self.metrics.description,
                    "thresholds": self.thresholds.as_dict(),
                },
                verdict.as_dict(),
            )
            self.records.append(StepRecord(percent, attempt, _iso(start), _iso(end), verdict, key))
            extended = f" (window {attempt})" if attempt > 1 else ""
            self.log(f"step {percent}%{extended}: {verdict.status.upper()}: {verdict.reason}")
            if verdict.status != "inconclusive" or attempt > self.max_extensions:
                return verdict
            self.log(
                f"step {percent}%: extending the window by {self.step_seconds:g} s "
                f"({attempt} of {self.max_extensions} extensions)"
            )

    def roll_back(self, reason: str) -> RolloutResult:
        self.log(f"rolling back {self.version}: {reason}")
        try:
            state = self.target.rollback()
        except Exception as e:
            self.event(
                "rollout.rollback",
                {"percent": self.percent, "manual": False},
                {"reason": reason, "rollback_error": f"{type(e).__name__}: {e}"},
            )
            raise RolloutError(
                f"rolling back {self.version} failed ({e}) after: {reason}. Traffic may still "
                "reach the canary: run `fraudops rollout rollback` (or fix the target first)"
            ) from e
        self.event(
            "rollout.rollback",
            {"percent": self.percent, "manual": False},
            {"reason": reason, "steps": self.summary(), "state": state.as_dict()},
        )
        _clear_canary_alias(self.store, self.model, self.version, f"{self.rollout_id} rollback")
        self.log(f"rolled back: all traffic on {state.stable.version}")
        return self.result("rolled_back", reason, state)

    def promote(self) -> RolloutResult:
        state = self.target.promote()
        self.percent = 100
        alias = _move_alias(self.store, self.model, "champion", self.version, self.rollout_id)
        _clear_canary_alias(self.store, self.model, self.version, f"{self.rollout_id} promote")
        shares = "/".join(f"{p}%" for p in dict.fromkeys(r.percent for r in self.records))
        reason = (
            f"{self.version} passed {len(self.records)} analysed window(s) at {shares} and now "
            "serves all traffic"
        )
        self.event(
            "rollout.promote",
            {"percent": self.percent, "manual": False},
            {"reason": reason, "steps": self.summary(), "state": state.as_dict(), "alias": alias},
        )
        self.log(f"promoted: {reason}")
        return self.result("promoted", reason, state)

    def summary(self) -> list[dict[str, Any]]:
        return [r.summary() for r in self.records]

    def result(self, outcome: str, reason: str, state: TargetState | None) -> RolloutResult:
        return RolloutResult(
            self.rollout_id,
            self.model,
            self.stable,
            self.version,
            outcome,
            reason,
            self.records,
            state,
            self.audit_keys,
        )


def _clear_canary_alias(store: ObjectStore, model: str, version: str, why: str) -> None:
    """The canary is gone (promoted or rolled back): ``canary`` must not name it any more."""
    try:
        if resolve(store, model, "canary") == version:
            remove_alias(store, model, "canary", reason=f"rollout {why}")
    except BundleError:
        pass  # no canary alias, or a version the registry does not know


def _move_alias(store: ObjectStore, model: str, alias: str, version: str, why: str) -> str:
    """Point ``alias`` at ``version``; a version unknown to the registry is reported, not fatal."""
    try:
        set_alias(store, model, alias, version, reason=f"rollout {why}")
    except BundleError as e:
        return f"not moved: {e}"
    return f"{alias} -> {version}"


def run_rollout(
    target: RolloutTarget,
    metrics: MetricsSource,
    *,
    store: ObjectStore,
    model: str,
    version: str,
    steps: Sequence[int] | str = (10, 50, 100),
    step_seconds: float = 60.0,
    thresholds: CanaryThresholds | None = None,
    max_extensions: int = 2,
    log_delay_seconds: float = 5.0,
    ready_timeout: float = 300.0,
    use_labels: bool = True,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    actor: str | None = None,
) -> RolloutResult:
    """Roll ``version`` out as a canary, step by step, and promote or roll back by itself.

    Args:
        target: Where the split lives (:class:`LocalGatewayTarget`,
            :class:`monitoring.rollout_cluster.InferenceServiceTarget`).
        metrics: Request counts, errors, latency (:class:`GatewayMetrics`,
            :class:`PrometheusMetrics`, :class:`LogOnlyMetrics`).
        store: The store with the registry, the inference log, labels and the audit log.
        model: Model name.
        version: Version (or alias, ``latest``) to roll out.
        steps: Canary shares, increasing (``(10, 50, 100)``); each share below 100 is analysed,
            then the canary is promoted.
        step_seconds: Length of a step's analysis window.
        thresholds: The analysis limits.
        max_extensions: How many times an inconclusive window is extended before rolling back.
        log_delay_seconds: Wait after each window before reading the inference log (the model
            servers write it every few seconds).
        ready_timeout: Seconds for the canary to start serving.
        use_labels: Compare precision and recall when labels have arrived.
        log: Receives one line per event.
        clock: Unix time (injectable for tests).
        sleep: Waits (injectable for tests).
        actor: Who acts, for the audit log.

    Returns:
        The outcome, every step's verdict and the final state.

    Raises:
        BundleError: the version is not registered (nothing was deployed).
        RolloutError: nothing was deployed (bad steps, a canary already running, the target
            unreachable or serving another model), or a rollback or the promotion failed.
    """
    shares = parse_steps(steps)
    analysed = [s for s in shares if s < 100]
    version = resolve(store, model, version)
    state = target.state()
    if state.canary is not None:
        raise CanaryExistsError(
            f"{target.description} already has a canary ({state.canary.version} at "
            f"{state.canary.percent}%); finish it first: `fraudops rollout promote` or `rollback`"
        )
    if state.model and state.model != model:
        raise RolloutError(
            f"{target.description} serves model {state.model!r}, not {model!r}; pass --model-name"
        )
    if state.stable.version == version:
        raise RolloutError(f"{version} is already the stable version on {target.description}")
    run = _Rollout(
        target=target,
        metrics=metrics,
        store=store,
        model=model,
        version=version,
        stable=state.stable.version,
        rollout_id=uuid.uuid4().hex[:12],
        step_seconds=float(step_seconds),
        thresholds=thresholds or CanaryThresholds(),
        max_extensions=max_extensions,
        log_delay_seconds=log_delay_seconds,
        use_labels=use_labels,
        log=log,
        clock=clock,
        sleep=sleep,
        actor=actor,
    )
    started = target.start(version, analysed[0])
    run.percent = analysed[0]
    log(
        f"rollout {run.rollout_id}: {model} {version} as canary of {run.stable} on "
        f"{target.description}, steps {'/'.join(f'{s}%' for s in analysed)} then promote, "
        f"{step_seconds:g} s windows, metrics: {metrics.description}"
    )
    try:
        reason = _walk(run, analysed, started, shares, ready_timeout)
    except KeyboardInterrupt:
        run.roll_back("interrupted (Ctrl-C) during the rollout")
        raise
    except RolloutError as e:
        reason = f"the rollout could not go on: {e}"
    except Exception as e:
        run.roll_back(f"unexpected {type(e).__name__} during the rollout: {e}")
        raise
    if reason is not None:
        return run.roll_back(reason)
    try:
        return run.promote()
    except RolloutError as e:
        raise RolloutError(
            f"promoting {version} failed ({e}); the canary still receives {run.percent}%: run "
            "`fraudops rollout promote` again or `fraudops rollout rollback`"
        ) from e


def _walk(
    run: _Rollout,
    analysed: list[int],
    started: TargetState,
    shares: tuple[int, ...],
    ready_timeout: float,
) -> str | None:
    """Walk the analysed steps; the reason to roll back, or None when every step passed."""
    alias = _move_alias(run.store, run.model, "canary", run.version, run.rollout_id)
    run.event(
        "rollout.start",
        {
            "steps": list(shares),
            "step_seconds": run.step_seconds,
            "max_extensions": run.max_extensions,
        },
        {"state": started.as_dict(), "alias": alias},
    )
    run.log(f"canary {run.version} deployed with {analysed[0]}% of the traffic")
    if not run.target.wait_ready(ready_timeout, run.sleep, run.clock):
        return f"canary {run.version} did not become ready in {ready_timeout:g} s"
    for i, percent in enumerate(analysed):
        if i:
            run.target.set_traffic(percent)
            run.percent = percent
            run.log(f"canary {run.version} now receives {percent}% of the traffic")
        verdict = run.judge(percent)
        if verdict.failed:
            return f"step {percent}%: {verdict.reason}"
        if verdict.status == "inconclusive":
            windows = run.max_extensions + 1
            return (
                f"step {percent}% still inconclusive after {windows} window(s) "
                f"({windows * run.step_seconds:g} s), not trusted: {verdict.reason}"
            )
    run.percent = 100
    return None


def _by_hand(
    target: RolloutTarget,
    store: ObjectStore,
    model: str,
    event: str,
    reason: str,
    actor: str | None,
) -> TargetState:
    """Promote or roll back the current canary by hand, and record it."""
    before = target.state()
    verb = "promote" if event == "rollout.promote" else "roll back"
    if before.canary is None:
        raise NoCanaryError(
            f"{target.description} has no canary to {verb} (stable {before.stable.version}); "
            "`fraudops rollout status` shows the state"
        )
    outcome: dict[str, Any] = {"reason": reason}
    if event == "rollout.promote":
        state = target.promote()
        outcome["alias"] = _move_alias(
            store, model, "champion", before.canary.version, "manual promote"
        )
    else:
        state = target.rollback()
    _clear_canary_alias(store, model, before.canary.version, f"manual {verb}")
    record_event(
        store,
        event,
        {
            "rollout_id": _last_rollout_id(store, model, before.canary.version),
            "model": model,
            "stable": before.stable.version,
            "canary": before.canary.version,
            "target": target.description,
            "percent": before.canary.percent,
            "manual": True,
        },
        {**outcome, "state": state.as_dict()},
        actor,
    )
    return state


def promote(
    target: RolloutTarget,
    *,
    store: ObjectStore,
    model: str,
    reason: str = "manual",
    actor: str | None = None,
) -> TargetState:
    """Promote the current canary by hand: all traffic to it, alias ``champion`` moved.

    Raises:
        NoCanaryError: there is no canary.
    """
    return _by_hand(target, store, model, "rollout.promote", reason, actor)


def rollback(
    target: RolloutTarget,
    *,
    store: ObjectStore,
    model: str,
    reason: str = "manual",
    actor: str | None = None,
) -> TargetState:
    """Roll the current canary back by hand: all traffic to the stable version.

    Raises:
        NoCanaryError: there is no canary.
    """
    return _by_hand(target, store, model, "rollout.rollback", reason, actor)


@dataclass
class RolloutStatus:
    """The target's state and the latest rollout's audit trail.

    Attributes:
        state: Who serves what now.
        rollout_id: The latest rollout of this model (None if there was none).
        events: That rollout's audit events, oldest first.
    """

    state: TargetState
    rollout_id: str | None
    events: list[dict[str, Any]]

    @property
    def steps(self) -> list[dict[str, Any]]:
        """The ``rollout.step`` events of the latest rollout."""
        return [e for e in self.events if e["event"] == "rollout.step"]

    @property
    def outcome(self) -> str:
        """``promoted``, ``rolled back``, ``rollback failed``, ``in progress`` or ``none``."""
        if self.rollout_id is None:
            return "none"
        for e in reversed(self.events):
            if e["event"] == "rollout.promote":
                return "promoted"
            if e["event"] == "rollout.rollback":
                return "rollback failed" if "rollback_error" in e["outcome"] else "rolled back"
        return "in progress"


def _rollout_events(store: ObjectStore, model: str) -> list[dict[str, Any]]:
    events = [e for name in EVENTS for e in read_audit(store, name)]
    events = [e for e in events if e["inputs"].get("model") == model]
    return sorted(events, key=lambda e: e["time"])


def _last_rollout_id(store: ObjectStore, model: str, canary: str) -> str | None:
    for e in reversed(_rollout_events(store, model)):
        if e["event"] == "rollout.start" and e["inputs"].get("canary") == canary:
            return e["inputs"].get("rollout_id")
    return None


def status(target: RolloutTarget, *, store: ObjectStore, model: str) -> RolloutStatus:
    """The target's state and the audit trail of the model's latest rollout."""
    state = target.state()
    events = _rollout_events(store, model)
    starts = [e for e in events if e["event"] == "rollout.start"]
    if not starts:
        return RolloutStatus(state, None, [])
    rollout_id = starts[-1]["inputs"]["rollout_id"]
    return RolloutStatus(
        state, rollout_id, [e for e in events if e["inputs"].get("rollout_id") == rollout_id]
    )
