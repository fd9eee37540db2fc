"""Helpers for the serving tests: a tiny model trained and registered inside the test session.

The bundle comes from the real pipeline step functions, run in-process
(:func:`pipelines.inprocess.run_steps_in_process`, as ``tests/conftest.py`` does) into a
:class:`~components.store.LocalStore`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from components.frames import write_table
from components.generator import GeneratorConfig, generate_transactions
from fraudops.local_processes import LocalProcess, free_port
from pipelines.inprocess import run_steps_in_process

ROOT = Path(__file__).resolve().parents[1]
CLI = "import typer; from fraudops.cli_serve import serve; typer.run(serve)"
MODEL = "fraud"
CONFIG = GeneratorConfig(n_customers=300, n_terminals=600, n_days=45, seed=5)
_LOOP = asyncio.new_event_loop()


def on_loop(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end on one event loop for the whole session, as in a server:
    a Redis state's asyncio connections belong to their loop."""
    return _LOOP.run_until_complete(coroutine)


async def timed_step(step: Awaitable[Any]) -> tuple[float, str]:
    """Await a state's step: the seconds it took, and ``"scored"`` or the message of the
    ``StateUnavailable`` it raised."""
    from serving.state import StateUnavailable

    started = time.monotonic()
    try:
        await step
        outcome = "scored"
    except StateUnavailable as e:
        outcome = str(e)
    return time.monotonic() - started, outcome


def predict(model: Any, payload: Any, headers: dict[str, str] | None = None) -> Any:
    """``model.predict`` (a coroutine, as KServe awaits it) run to its end (:func:`on_loop`)."""
    return on_loop(model.predict(payload, headers))


@dataclass(frozen=True)
class TrainedModel:
    """A registered bundle and the data it was trained on."""

    store: Path
    name: str
    version: str
    data: pd.DataFrame
    """The validated training data (canonical, typed)."""


def train_tiny_model(folder: Path, name: str = MODEL, seed: int = 42) -> TrainedModel:
    """Generate data, run the pipeline's step functions, register into ``folder/store``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = write_table(generate_transactions(CONFIG), folder / "transactions.parquet")
    store = folder / "store"
    result = run_steps_in_process(
        folder / "steps",
        data,
        str(store),
        name,
        train={
            "seed": seed,
            "class_weighting": "sqrt",
            "n_jobs": 1,
            "params": {"n_estimators": 120},
        },
        threshold_policy="alert_budget:20",
        card_precision_k=50,
    )
    return TrainedModel(store, name, result["version"], pd.read_parquet(result["accepted.parquet"]))


_TRAINED: dict[str, TrainedModel] = {}


def shared_model(tmp_path_factory, name: str = MODEL) -> TrainedModel:
    """One tiny model per test session (training takes seconds), shared by the test modules."""
    if name not in _TRAINED:
        _TRAINED[name] = train_tiny_model(tmp_path_factory.mktemp(f"model-{name}"), name=name)
    return _TRAINED[name]


class ServerProcess(LocalProcess):
    """A real ``python -m <module>`` process on a free loopback port.

    Args:
        module: ``serving``, ``serving.echo`` (KServe servers: ``--http_port``/``--grpc_port``
            are added), ``serving.log_sink`` (``--port``) or ``fraudops serve`` (the CLI
            command, ``--http-port``).
        args: Further arguments.
        log: File receiving the process' stdout and stderr.
        env: Extra environment variables.
        ready_path: GET path answering 200 once the process is ready.
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        ready_path: str = "/v2/health/ready",
    ) -> None:
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        if module == "serving.log_sink":
            command = ["-m", module, "--port", str(self.http_port)]
        elif module == "fraudops serve":  # the CLI command, as `fraudops serve` will run it
            command = ["-c", CLI, "--http-port", str(self.http_port)]
        else:
            self.grpc_port = free_port()  # served with --enable_grpc true
            command = ["-m", module, "--http_port", str(self.http_port)]
            command += ["--grpc_port", str(self.grpc_port)]
        super().__init__([*command, *args], self.url + ready_path, log, env, cwd=ROOT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        super().wait_ready(timeout)

    def output(self) -> str:
        return self.tail(6000)

    def stop(self, timeout: float = 20.0) -> int:
        return super().stop(timeout)


CONTEXT = (
    "transaction_type",
    "channel",
    "account_type",
    "merchant_category",
    "account_balance",
    "account_age_days",
)


def later_transactions(
    n: int, seed: int = 6, start: str = "2026-05-16", days: int = 2
) -> pd.DataFrame:
    """Transactions right after the training data (same customer/terminal ids), in time order.

    About 600 a day: ask for more ``days`` to get more than ~1,200.
    """
    frame = generate_transactions(
        GeneratorConfig(n_customers=300, n_terminals=600, n_days=days, seed=seed, start_date=start)
    )
    frame = frame.drop(columns=["is_fraud", "label_known_at", "fraud_scenario"])
    return frame.sort_values("timestamp", kind="stable").head(n).reset_index(drop=True)


def instance(row: pd.Series | dict) -> dict:
    """A V1 transaction object from a canonical row (missing context fields left out)."""
    row = dict(row)
    out = {
        "transaction_id": str(row["transaction_id"]),
        "timestamp": pd.Timestamp(row["timestamp"]).isoformat().replace("+00:00", "Z"),
        "customer_id": str(row["customer_id"]),
        "terminal_id": str(row["terminal_id"]),
        "amount": float(row["amount"]),
    }
    for name in CONTEXT:
        value = row.get(name)
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            continue
        out[name] = value if isinstance(value, str) else float(value)
    return out


def tensors(instances: list[dict]) -> list[dict]:
    """V2 JSON input tensors (one per field) for V1 transaction objects."""
    names = ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount", *CONTEXT]
    out = []
    for name in names:
        values = [i.get(name) for i in instances]
        numeric = name in ("amount", "account_balance", "account_age_days")
        if not numeric:
            values = ["" if v is None else v for v in values]
        out.append(
            {
                "name": name,
                "shape": [len(values)],
                "datatype": "FP64" if numeric else "BYTES",
                "data": values,
            }
        )
    return out
