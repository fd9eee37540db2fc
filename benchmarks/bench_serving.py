"""Serving: latency and throughput of the KServe model server, against an empty KServe model.

Six servers run on loopback at once, each a real ``python -m ...`` process with the same
KServe settings: an empty model (``serving.echo``: its ``predict`` returns the input,
so what is left is KServe's own cost on this machine), the fraud model with its defaults (reason
codes for every transaction, inference log on, plain-JSON scoring answered by
``serving.direct_routes``), the same with every request through KServe's FastAPI routes
(``--direct_routes false``), the fraud model with reason codes for alerts only, and the fraud
model with its online state in Redis (``--state_redis_url``, a ``redis-server`` on loopback, as
several replicas of a version would share it), and the same with that Redis behind a proxy
that delays each way (:mod:`benchmarks.delay_proxy`: Redis across a slow link; V1 singles
only). The load
comes from a separate process (this module's ``load`` command: asyncio and uvloop over raw
keep-alive sockets, closed loop, one request in flight per connection) replaying generated
transactions in time order, so the online state evolves as in production: the first 150,000
as single transactions (V1 and V2 scenarios continue one stream), the rest as batches of 1,000
(V1 and V2 continue another); no transaction is scored twice. Before its first batch, each
server scores the singles it did not get to (unmeasured), so every server's state holds the
same transactions when the batches start. Every scenario runs in three rounds (4 s measured
after 1.5 s of warm-up each); in a round the servers take turns, so a slow minute of this
shared machine falls on all of them alike; the figures are the medians of the rounds. V1 and
V2 at concurrency 1 run in five rounds, back to back on each server: the V2 target is a ratio
to V1, judged by the median of the five per-round ratios of their p99s.

The model is what ``fraudops train`` registers by default (XGBoost, early stopping on 400
rounds), trained here on 2,000 customers over 60 days; the replay is the 450 days after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fraudops.local_processes import start_redis_server

ROOT = Path(__file__).resolve().parents[1]
WARMUP_SECONDS = 1.5
MEASURE_SECONDS = 4.0
REPEATS = 3
"""Each scenario runs this many times; the figures are the medians (this shared machine's
speed drifts by 5-10% from minute to minute)."""
BATCH = 1000
REPLAY_DAYS = 450  # about 1.8M transactions: enough for three runs of every scenario
SINGLES = 150_000


# -- the load generator (runs in its own process) -------------------------------------------


async def _connection(host, port, requests, state, deadline_warm, deadline, latencies):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline or (state["next"] >= len(requests) and not state["cycle"]):
                return
            request = requests[state["next"] % len(requests)]
            state["next"] += 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            if head[9:12] != b"200":
                state["errors"] += 1
            if started >= deadline_warm:
                latencies.append(elapsed)
                state["measured"] += 1
    finally:
        writer.close()


async def _load(
    host: str, port: int, requests: list[bytes], concurrency: int, cycle: bool = False
) -> dict:
    state = {"next": 0, "errors": 0, "measured": 0, "cycle": cycle}
    latencies: list[float] = []
    t0 = time.perf_counter()
    warm, end = t0 + WARMUP_SECONDS, t0 + WARMUP_SECONDS + MEASURE_SECONDS
    await asyncio.gather(
        *(
            _connection(host, port, requests, state, warm, end, latencies)
            for _ in range(concurrency)
        )
    )
    measured = min(time.perf_counter(), end) - warm
    if not latencies:
        raise RuntimeError("no request completed after the warm-up: too few bodies")
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000.0

    return {
        "requests": len(latencies),
        "used": state["next"],
        "errors": state["errors"],
        "rps": len(latencies) / measured if measured > 0 else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000.0,
    }


def load_main(argv: list[str]) -> None:
    """``python -m benchmarks.bench_serving load ...``: print one JSON line of results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", required=True, help="File with one JSON body per line.")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--cycle", action="store_true", help="Reuse the bodies (stateless).")
    args = parser.parse_args(argv)
    head = (
        f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    requests = []
    with open(args.bodies, "rb") as fh:
        for i, line in enumerate(fh):
            if i < args.offset:
                continue
            body = line.rstrip(b"\n")
            requests.append(head + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    result = asyncio.run(_load("127.0.0.1", args.port, requests, args.concurrency, args.cycle))
    print(json.dumps(result))


# -- the benchmark --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(folder: Path) -> tuple[str, object]:
    """Register a default-configured model into ``folder/store``; return (store, data)."""
    from components.frames import write_table
    from components.generator import GeneratorConfig, generate_transactions
    from pipelines.inprocess import run_steps_in_process

    # early enough that the replay's 450 days end before today (no "in the future" refusals)
    config = GeneratorConfig(
        n_customers=2000, n_terminals=4000, n_days=60, seed=21, start_date="2025-06-01"
    )
    data = write_table(generate_transactions(config), folder / "transactions.parquet")
    store = str(folder / "store")
    run_steps_in_process(folder / "steps", data, store, "fraud-detector", train={"seed": 42})
    return store, config


def _bodies(folder: Path, config) -> dict[str, Path]:
    """Request bodies replaying the weeks after the training data, in time order."""
    import orjson
    import pandas as pd

    from components.generator import GeneratorConfig, generate_transactions

    start = pd.Timestamp(config.start_date) + pd.Timedelta(days=config.n_days)
    later = generate_transactions(
        GeneratorConfig(
            n_customers=config.n_customers,
            n_terminals=config.n_terminals,
            n_days=REPLAY_DAYS,
            seed=config.seed + 1,
            start_date=f"{start:%Y-%m-%d}",
        )
    ).sort_values("timestamp", kind="stable")
    rows = []
    for r in later.itertuples(index=False):
        rows.append(
            {
                "transaction_id": r.transaction_id,
                "timestamp": r.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "customer_id": r.customer_id,
                "terminal_id": r.terminal_id,
                "amount": float(r.amount),
                "transaction_type": str(r.transaction_type),
                "channel": str(r.channel),
                "account_type": str(r.account_type),
                "account_balance": float(r.account_balance),
                "account_age_days": float(r.account_age_days),
                "merchant_category": str(r.merchant_category),
            }
        )
    names = list(rows[0])
    numeric = {"amount", "account_balance", "account_age_days"}

    def v2(chunk: list[dict]) -> dict:
        return {
            "inputs": [
                {
                    "name": n,
                    "shape": [len(chunk)],
                    "datatype": "FP64" if n in numeric else "BYTES",
                    "data": [r[n] for r in chunk],
                }
                for n in names
            ]
        }

    singles, batches = rows[:SINGLES], rows[SINGLES:]
    files = {
        "v1": [orjson.dumps({"instances": [r]}) for r in singles],
        "v2": [orjson.dumps(v2([r])) for r in singles],
        "v1_batch": [
            orjson.dumps({"instances": batches[i : i + BATCH]})
            for i in range(0, len(batches) - BATCH + 1, BATCH)
        ],
        "v2_batch": [
            orjson.dumps(v2(batches[i : i + BATCH]))
            for i in range(0, len(batches) - BATCH + 1, BATCH)
        ],
    }
    out = {}
    for name, bodies in files.items():
        path = folder / f"{name}.jsonl"
        path.write_bytes(b"\n".join(bodies) + b"\n")
        out[name] = path
    return out


class _Server:
    def __init__(self, module: str, args: list[str], log: Path) -> None:
        self.port = _free_port()
        self.log = log.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args, *self._ports()],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{module} exited: see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/v2/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{module} not ready: see {log}")

    def _ports(self) -> list[str]:
        return ["--http_port", str(self.port), "--host", "127.0.0.1", "--grpc_port", "0"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def _run_load(
    port: int, path: str, bodies: Path, offset: int, concurrency: int, cycle: bool
) -> dict:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.bench_serving", "load", "--port", str(port)),
            *("--path", path, "--bodies", str(bodies), "--offset", str(offset)),
            *("--concurrency", str(concurrency), *(["--cycle"] if cycle else [])),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


SCENARIOS = [  # (name, body file, protocol path, concurrency)
    ("v1 c1", "v1", "v1", 1),
    ("v1 c4", "v1", "v1", 4),
    ("v2 c1", "v2", "v2", 1),
    ("v2 c4", "v2", "v2", 4),
    ("v1 batch", "v1_batch", "v1", 1),
    ("v2 batch", "v2_batch", "v2", 1),
]
PAIRED = ("v1 c1", "v2 c1")
"""Run back to back on each server in every round: the V2 target is a ratio to V1, and a
ratio of two p99s taken in the same half-minute is not moved by this machine's drift."""
PAIRED_REPEATS = 5
PROXY_DELAY = 0.000_25
"""Seconds the ``redis-remote`` server's Redis proxy holds each chunk, each way."""


def _catch_up(server: _Server, path: str, singles: Path, start: int) -> None:
    """Score the single transactions from ``start`` on as unmeasured batches.

    A faster server gets through more of the single-transaction replay in its fixed time, and
    the batches that follow would then find more recent history in its online state (more
    rows to read) than a slower server's: each server first scores the rest of the singles.
    """
    import httpx
    import orjson

    rows = [orjson.loads(line)["instances"][0] for line in singles.read_bytes().splitlines()]
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=120) as client:
        for i in range(start, len(rows), BATCH):
            client.post(path, json={"instances": rows[i : i + BATCH]}).raise_for_status()


class _Under:
    """A server under measurement: where its streams are, and what it has measured."""

    def __init__(self, label: str, server: _Server, model: str, scenarios: list) -> None:
        self.label, self.server, self.model, self.scenarios = label, server, model, scenarios
        # singles (V1 and V2) continue one stream, batches (V1 and V2) another: each run goes
        # on where the one before stopped, so no transaction is scored twice
        self.offsets = {"single": 0, "batch": 0}
        self.runs: dict[str, list[dict]] = {}

    @property
    def stateless(self) -> bool:  # the empty model: it cycles through the bodies
        return self.model == "echo"


def _measure(
    servers: list[_Under], files: dict[str, Path]
) -> tuple[dict[str, dict[str, dict]], dict[str, list[float]]]:
    """Every scenario of every server, in rounds, the servers taking turns.

    This machine's speed drifts from minute to minute: a round runs the scenario on each
    server in turn, so a slow minute falls on all of them rather than on one, and each
    server's figures are its medians over rounds spread across the run. The :data:`PAIRED`
    scenarios come first, ``PAIRED_REPEATS`` rounds of both back to back on each server; the
    others run ``REPEATS`` rounds each. All the singles come before all the batches (the
    online state's transactions stay in time order); between them each fraud server scores
    the singles it did not get to (see :func:`_catch_up`).

    Returns:
        Per server, the medians of every scenario; and per server, the V2/V1 p99 ratio of
        each paired round.
    """
    paths = {
        "echo": {"v1": "/v1/models/echo:predict", "v2": "/v2/models/echo/infer"},
        "fraud-detector": {
            "v1": "/v1/models/fraud-detector:predict",
            "v2": "/v2/models/fraud-detector/infer",
        },
    }
    for phase in ("single", "batch"):
        if phase == "batch":
            for under in servers:
                if not under.stateless and any(sc[0].endswith("batch") for sc in under.scenarios):
                    _catch_up(
                        under.server,
                        paths[under.model]["v1"],
                        files["v1"],
                        under.offsets["single"],
                    )
        scenarios = [sc for sc in SCENARIOS if ("batch" in sc[1]) == (phase == "batch")]
        # the paired scenarios as one group of PAIRED_REPEATS rounds, then one group each
        paired = [sc for sc in scenarios if sc[0] in PAIRED]
        groups = [(paired, PAIRED_REPEATS)] if paired else []
        groups += [([sc], REPEATS) for sc in scenarios if sc[0] not in PAIRED]
        for group, repeats in groups:
            for _ in range(repeats):
                for under in servers:
                    for scenario in group:
                        if scenario in under.scenarios:
                            _run(under, scenario, phase, paths, files)
            for under in servers:
                for name, *_ in group:
                    runs = under.runs.get(name)
                    if runs:
                        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                        print(
                            f"   ... {under.label} {name}: {median} (median of {len(runs)})",
                            flush=True,
                        )
    medians = {
        under.label: {
            name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            for name, runs in under.runs.items()
        }
        for under in servers
    }
    v1, v2 = PAIRED
    ratios = {
        under.label: [
            b["p99_ms"] / a["p99_ms"] for a, b in zip(under.runs[v1], under.runs[v2], strict=True)
        ]
        for under in servers
        if v1 in under.runs and v2 in under.runs  # both paired scenarios on this server
    }
    return medians, ratios


def _run(under: _Under, scenario: tuple, phase: str, paths: dict, files: dict) -> None:
    name, body, protocol, concurrency = scenario
    result = _run_load(
        under.server.port,
        paths[under.model][protocol],
        files[body],
        under.offsets[phase],
        concurrency,
        under.stateless,
    )
    if not under.stateless:
        under.offsets[phase] += result["used"]
    if result["errors"]:
        raise RuntimeError(f"{under.label} {name}: {result['errors']} request(s) failed")
    under.runs.setdefault(name, []).append(result)


def run():
    from benchmarks.harness import Figure

    common = ["--enable_latency_logging", "false", "--access_logging", "false"]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        store, config = _train(folder)
        files = _bodies(folder, config)
        print(f"   ... model and bodies ready in {time.perf_counter() - started:.0f} s", flush=True)
        model = f"{store}#fraud-detector"
        servers: list[_Under] = []
        redis_server, redis_url = start_redis_server()
        # the same Redis behind a proxy delaying each way (database 1: a state of its own)
        proxy_port = _free_port()
        proxy = subprocess.Popen(
            [
                *(sys.executable, "-m", "benchmarks.delay_proxy", str(proxy_port)),
                *(redis_url.rsplit(":", 1)[1].split("/")[0], str(PROXY_DELAY)),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        proxy.stdout.readline()  # "ready"
        remote_url = f"redis://127.0.0.1:{proxy_port}/1"
        try:  # all six up at once (idle ones cost memory, not CPU), measured in turns
            for label, module, args, scenarios in (
                ("echo", "serving.echo", ["--model_name", "echo"], SCENARIOS),
                (
                    "fraud",
                    "serving",
                    ["--model_uri", model, "--log_store", f"{tmp}/log"],
                    SCENARIOS,
                ),
                (
                    "kserve-routes",
                    "serving",
                    [
                        *("--model_uri", model, "--log_store", f"{tmp}/log3"),
                        *("--direct_routes", "false"),
                    ],
                    SCENARIOS,
                ),
                (
                    "alerts",
                    "serving",
                    [
                        *("--model_uri", model, "--log_store", f"{tmp}/log2"),
                        *("--reasons_for", "alerts"),
                    ],
                    [SCENARIOS[1], SCENARIOS[4]],
                ),
                (
                    "redis",
                    "serving",
                    [
                        *("--model_uri", model, "--log_store", f"{tmp}/log4"),
                        *("--state_redis_url", redis_url),
                    ],
                    [*SCENARIOS[:3], SCENARIOS[4]],
                ),
                (
                    "redis-remote",
                    "serving",
                    [
                        *("--model_uri", model, "--log_store", f"{tmp}/log5"),
                        *("--state_redis_url", remote_url),
                    ],
                    SCENARIOS[:2],
                ),
            ):
                server = _Server(module, [*args, *common], folder / f"{label}.log")
                name = "echo" if label == "echo" else "fraud-detector"
                servers.append(_Under(label, server, name, scenarios))
            results, ratios = _measure(servers, files)
        finally:
            for under in servers:
                under.server.stop()
            proxy.terminate()
            proxy.wait(10)
            redis_server.terminate()
            redis_server.wait(10)
    return _figures(results, ratios, Figure)


def _figures(results: dict, ratios: dict[str, list[float]], Figure) -> list:
    fraud, echo, alerts = results["fraud"], results["echo"], results["alerts"]
    shared, remote = results["redis"], results["redis-remote"]
    routes = results["kserve-routes"]

    def floor(name: str, key: str) -> str:
        f, e = fraud[name][key], echo[name][key]
        if key == "rps":  # throughput: the share of the empty model's that is left
            return f"empty model {e:,.0f} req/s, this is {f / e:.1%} of it"
        return f"empty model {e:,.2f} ms, this is {f / e:.1f}x"

    v1c1, v1c4, v2c1, v2c4 = fraud["v1 c1"], fraud["v1 c4"], fraud["v2 c1"], fraud["v2 c4"]
    paired = statistics.median(ratios["fraud"])
    rounds = ", ".join(f"{r:.2f}" for r in ratios["fraud"])

    def v2_cost(server: dict) -> float:  # server time of a V2 request over a V1 one (saturated)
        return server["v1 c4"]["rps"] / server["v2 c4"]["rps"]

    def through_routes(name: str, what: str, scale: int = 1) -> Figure:
        r, d = routes[name]["rps"] * scale, fraud[name]["rps"] * scale
        unit = "tx/s" if scale > 1 else "req/s"
        return Figure(
            f"{what}, through KServe's routes (--direct_routes false)",
            r,
            unit,
            "",
            None,
            f"p99 {routes[name]['p99_ms']:.2f} ms; direct routes (the default) {d:,.0f} {unit}, "
            f"{d / r - 1:+.0%}",
        )

    tx = {k: fraud[k]["rps"] * BATCH for k in ("v1 batch", "v2 batch")}
    echo_tx = {k: echo[k]["rps"] * BATCH for k in ("v1 batch", "v2 batch")}
    return [
        Figure(
            "V1 single transaction, p99 latency, concurrency 1",
            v1c1["p99_ms"],
            "ms",
            "<= 2 ms",
            v1c1["p99_ms"] <= 2,
            f"p50 {v1c1['p50_ms']:.2f} ms; {floor('v1 c1', 'p99_ms')}",
        ),
        Figure(
            "V1 single transaction, throughput, concurrency 4",
            v1c4["rps"],
            "req/s",
            ">= 1,500 req/s",
            v1c4["rps"] >= 1500,
            f"{floor('v1 c4', 'rps')}",
        ),
        Figure(
            "V1 single transaction, p99 latency, concurrency 4",
            v1c4["p99_ms"],
            "ms",
            "<= 5 ms",
            v1c4["p99_ms"] <= 5,
            f"p50 {v1c4['p50_ms']:.2f} ms; {floor('v1 c4', 'p99_ms')}",
        ),
        Figure(
            "V2 single transaction, p99 latency, concurrency 1",
            v2c1["p99_ms"],
            "ms",
            "within 25% of V1",
            paired <= 1.25,
            f"V1 {v1c1['p99_ms']:.2f} ms; V2/V1 {paired:.2f}x, the median of "
            f"{len(ratios['fraud'])} rounds of both back to back ({rounds}); "
            f"through KServe's routes {statistics.median(ratios['kserve-routes']):.2f}x; "
            f"the empty model {statistics.median(ratios['echo']):.2f}x; "
            f"{floor('v2 c1', 'p99_ms')}",
        ),
        Figure(
            "V2 single transaction, throughput, concurrency 4",
            v2c4["rps"],
            "req/s",
            "within 25% of V1",
            v2c4["rps"] >= 0.75 * v1c4["rps"],
            f"V1 {v1c4['rps']:,.0f} req/s; p99 {v2c4['p99_ms']:.2f} ms; {floor('v2 c4', 'rps')}",
        ),
        Figure(
            "V1 batches of 1,000, throughput",
            tx["v1 batch"],
            "tx/s",
            ">= 200,000 tx/s",
            tx["v1 batch"] >= 200_000,
            f"p50 {fraud['v1 batch']['p50_ms']:.1f} ms per batch; empty model "
            f"{echo_tx['v1 batch']:,.0f} tx/s, this is {tx['v1 batch'] / echo_tx['v1 batch']:.1%}",
        ),
        Figure(
            "V2 batches of 1,000, throughput",
            tx["v2 batch"],
            "tx/s",
            ">= 200,000 tx/s",
            tx["v2 batch"] >= 200_000,
            f"p50 {fraud['v2 batch']['p50_ms']:.1f} ms per batch; empty model "
            f"{echo_tx['v2 batch']:,.0f} tx/s, this is {tx['v2 batch'] / echo_tx['v2 batch']:.1%}",
        ),
        Figure(
            "V1 single, concurrency 4, reason codes for alerts only",
            alerts["v1 c4"]["rps"],
            "req/s",
            ">= 1,500 req/s",
            alerts["v1 c4"]["rps"] >= 1500,
            f"p99 {alerts['v1 c4']['p99_ms']:.2f} ms (--reasons_for alerts); "
            f"{alerts['v1 c4']['rps'] / echo['v1 c4']['rps']:.1%} of the empty model",
        ),
        Figure(
            "V1 batches of 1,000, reason codes for alerts only",
            alerts["v1 batch"]["rps"] * BATCH,
            "tx/s",
            ">= 200,000 tx/s",
            alerts["v1 batch"]["rps"] * BATCH >= 200_000,
            f"p50 {alerts['v1 batch']['p50_ms']:.1f} ms, p99 {alerts['v1 batch']['p99_ms']:.1f} ms "
            "per batch (--reasons_for alerts)",
        ),
        Figure(
            "V1 single transaction, p99 latency, concurrency 1, online state in Redis",
            shared["v1 c1"]["p99_ms"],
            "ms",
            "<= 2 ms",
            shared["v1 c1"]["p99_ms"] <= 2,
            f"p50 {shared['v1 c1']['p50_ms']:.2f} ms (--state_redis_url: a redis-server on "
            f"loopback); in memory p50 {v1c1['p50_ms']:.2f}, p99 {v1c1['p99_ms']:.2f} ms",
        ),
        Figure(
            "V1 single transaction, throughput, concurrency 4, online state in Redis",
            shared["v1 c4"]["rps"],
            "req/s",
            ">= 1,500 req/s",
            shared["v1 c4"]["rps"] >= 1500,
            f"p99 {shared['v1 c4']['p99_ms']:.2f} ms; in memory {v1c4['rps']:,.0f} req/s "
            "(one replica; replicas sharing Redis add throughput)",
        ),
        Figure(
            "V1 single transaction, throughput, concurrency 4, online state in Redis across a "
            "slow link",
            remote["v1 c4"]["rps"],
            "req/s",
            "",
            None,
            f"p99 {remote['v1 c4']['p99_ms']:.2f} ms; Redis behind a proxy delaying each way "
            f"by {PROXY_DELAY * 1e3:g} ms: concurrency 1 p50 {remote['v1 c1']['p50_ms']:.2f} ms, "
            f"{remote['v1 c1']['p50_ms'] - shared['v1 c1']['p50_ms']:.2f} ms more than on "
            "loopback; a replica that held its event loop for the round trip would serve at "
            f"most {1000 / remote['v1 c1']['p50_ms']:,.0f} req/s (1 / that p50)",
        ),
        Figure(
            "V1 batches of 1,000, throughput, online state in Redis",
            shared["v1 batch"]["rps"] * BATCH,
            "tx/s",
            "",
            None,
            f"p50 {shared['v1 batch']['p50_ms']:.1f} ms per batch; in memory "
            f"{tx['v1 batch']:,.0f} tx/s",
        ),
        through_routes("v1 c4", "V1 single transaction, throughput, concurrency 4"),
        through_routes("v2 c4", "V2 single transaction, throughput, concurrency 4"),
        Figure(
            "V2 single transaction, p99 latency, concurrency 1, through KServe's routes",
            routes["v2 c1"]["p99_ms"],
            "ms",
            "",
            None,
            f"V1 {routes['v1 c1']['p99_ms']:.2f} ms through KServe's routes; direct routes (the "
            f"default) V2 {v2c1['p99_ms']:.2f} ms",
        ),
        through_routes("v1 batch", "V1 batches of 1,000", BATCH),
        through_routes("v2 batch", "V2 batches of 1,000", BATCH),
        Figure(
            "V2 request cost relative to V1 (concurrency 4)",
            v2_cost(fraud),
            "x",
            "",
            None,
            f"server time a request, V2 over V1; through KServe's routes {v2_cost(routes):.2f}x; "
            f"the empty model (KServe's routes) {v2_cost(echo):.2f}x",
        ),
        Figure(
            "slowest single-transaction request (max latency, every scenario)",
            max(fraud[k]["max_ms"] for k in ("v1 c1", "v1 c4", "v2 c1", "v2 c4")),
            "ms",
            "",
            None,
            "medians of the rounds' maxima: "
            + ", ".join(f"{k} {fraud[k]['max_ms']:.1f}" for k in fraud)
            + f" ms; the empty model at most {max(r['max_ms'] for r in echo.values()):.1f} ms",
        ),
        Figure(
            "empty KServe model: V1 single, concurrency 4",
            echo["v1 c4"]["rps"],
            "req/s",
            "",
            None,
            f"p99 {echo['v1 c4']['p99_ms']:.2f} ms; concurrency 1: p99 "
            f"{echo['v1 c1']['p99_ms']:.2f} ms (the floor: KServe's own cost on this machine)",
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "load":
        load_main(sys.argv[2:])
    else:
        print("usage: python -m benchmarks serving  (or: ... bench_serving load --port ...)")
