"""Score validated transactions: online features, model, decision, reason codes, state update.

Pure logic apart from KServe (the :class:`serving.model.FraudDetector` is the glue). One
call of :meth:`Scorer.score_async` reads the history of the request's customers and terminals,
computes the features, scores, decides at the bundle's threshold, explains, and then appends the
transactions to the online state (only after they were scored, so a failure leaves the state
unchanged).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from components.bundle import Bundle
from components.features.build import overflowing
from components.model import CONTRIBUTION_METHODS, DEFAULT_CONTRIBUTIONS, FraudModel
from components.scoring import compile_kernels, format_reasons
from serving.errors import InvalidTransactions
from serving.features import OnlineFeatures, entity_codes
from serving.state import History, LabelsSet, OnlineState
from serving.transactions import TransactionBatch

__all__ = ["REASONS_FOR", "Scored", "Scorer"]

REASONS_FOR = ("all", "alerts", "none")
ReasonsFor = Literal["all", "alerts", "none"]


@dataclass
class Scored:
    """Scores of one request.

    Attributes:
        score: Fraud score per transaction (float64).
        alert: Whether the score reaches the threshold.
        reasons: Reason codes per transaction (empty when not computed or none positive).
        features: The feature matrix (float32, model column order).
    """

    score: np.ndarray
    alert: np.ndarray
    reasons: list[list[str]]
    features: np.ndarray

    @property
    def decisions(self) -> list[str]:
        return ["alert" if a else "pass" for a in self.alert.tolist()]


class Scorer:
    """Everything needed to score one request, loaded from a verified bundle.

    Args:
        bundle: A verified bundle.
        state: The online feature state (seeded by the caller; may be set after construction).
        n_reasons: Reason codes per transaction.
        reasons_for: ``all`` transactions, only ``alerts``, or ``none``.
        contributions: XGBoost contributions behind the reason codes: ``approx`` (Saabas,
            the default) or ``exact`` (tree SHAP, about 1 ms a transaction more).
    """

    def __init__(
        self,
        bundle: Bundle,
        state: OnlineState | None,
        n_reasons: int = 3,
        reasons_for: ReasonsFor = "all",
        contributions: str = DEFAULT_CONTRIBUTIONS,
    ) -> None:
        if reasons_for not in REASONS_FOR:
            raise ValueError(f"reasons_for {reasons_for!r}: choose one of {REASONS_FOR}")
        if contributions not in CONTRIBUTION_METHODS:
            raise ValueError(
                f"contributions {contributions!r}: choose one of {CONTRIBUTION_METHODS}"
            )
        self.name = bundle.name
        self.version = bundle.version
        self.spec = bundle.spec()
        self.threshold = float(bundle.threshold()["threshold"])
        self.model: FraudModel = bundle.model()
        if self.model.model_type == "xgboost":
            # one request's rows are few: OpenMP threads only add contention with the server
            self.model.estimator.set_param({"nthread": 1})
            self.model.compiled_trees()  # compile and check now, before the server is ready
        self.features = OnlineFeatures(self.spec, self.model.feature_names)
        compile_kernels()
        self.state = state
        self.scored_elsewhere: deque[tuple[str, tuple]] = deque()
        """Transactions scored by other servers and late labels, waiting for the state, in
        arrival order: ``("append", args)`` or ``("set_labels", args)`` (may be shared with a
        scorer this one replaces)."""
        self.on_labels: Callable[[LabelsSet], object] | None = None
        """Told what each batch of late labels did to the state (metrics)."""
        self.on_repeated: Callable[[int], object] | None = None
        """Told how many transactions the state held already (retries; metrics)."""
        self.n_reasons = n_reasons
        self.reasons_for: ReasonsFor = reasons_for
        self.contributions = contributions
        if self.model.model_type == "random_forest" and reasons_for != "none":
            self.reasons_for = "none"  # the model has no per-prediction contributions
        # rows scoring at least this get reason codes (None: no row)
        self._explain_from: float | None = None
        if n_reasons > 0 and self.reasons_for != "none":
            self._explain_from = -np.inf if self.reasons_for == "all" else self.threshold

    def add_scored_elsewhere(
        self,
        customer_ids: list[str],
        terminal_ids: list[str],
        time_ms: np.ndarray,
        amount: np.ndarray,
        transaction_ids: list[str] | None = None,
    ) -> None:
        """Queue transactions another server scored (another version of the model) for the
        online state: :meth:`apply_scored_elsewhere` adds them, chunk by chunk (before a
        request is scored, see :meth:`score_async`, and wherever the caller schedules it).

        Safe to call from any thread. A state that only the scoring thread may change (in
        memory) is changed there (:meth:`score_async`, :meth:`apply_scored_elsewhere`), so
        scoring needs no lock; a thread-safe one (Redis) is not caught up by requests: the
        caller applies the queue on its own thread, and the event loop never waits for it.
        """
        self.scored_elsewhere.append(
            ("append", (customer_ids, terminal_ids, time_ms, amount, None, transaction_ids))
        )

    def add_labels(
        self,
        terminal_ids: list[str],
        time_ms: np.ndarray,
        labels: np.ndarray,
        transaction_ids: list[str] | None = None,
    ) -> None:
        """Queue late labels for the state (:meth:`OnlineState.set_labels`), after the
        transactions queued before them; safe from any thread, as
        :meth:`add_scored_elsewhere`."""
        self.scored_elsewhere.append(
            ("set_labels", (terminal_ids, time_ms, labels, transaction_ids))
        )

    def apply_scored_elsewhere(self, limit: int | None = None) -> int:
        """Apply up to ``limit`` queued chunks (all: None) to the state, on the scoring
        thread; returns the number of transactions added."""
        added = 0
        queue, state = self.scored_elsewhere, self.state
        if not queue or state is None:
            return 0
        while queue and (limit is None or limit > 0):
            kind, args = queue[0]
            if kind == "append":
                repeated = state.append(*args)
                added += len(args[0]) - repeated
                if repeated and self.on_repeated is not None:
                    self.on_repeated(repeated)
            else:
                done = state.set_labels(*args)
                if self.on_labels is not None:
                    self.on_labels(done)
            queue.popleft()  # only once applied: a shared state that fails keeps it queued
            limit = None if limit is None else limit - 1
        return added

    def _refuse_overflow(self, batch: TransactionBatch, matrix: np.ndarray) -> np.ndarray:
        """``matrix``, unless a feature is beyond float32 (400, naming the transactions)."""
        too_large = overflowing(self.features.names, matrix)
        if too_large:
            raise InvalidTransactions(
                [
                    f"transaction {row} ({batch.transaction_id[row]!r}): feature {name!r} "
                    "overflows the model's float32 input; a number of this transaction is "
                    "implausibly large for it (e.g. an amount over a minute account_balance)"
                    for row, name in too_large
                ]
            )
        return matrix

    async def score_async(self, batch: TransactionBatch, catch_up: int | None = None) -> Scored:
        """Score ``batch``, then add it to the online state (a state in Redis awaits its
        round trip, so the server works on other requests meanwhile).

        Args:
            batch: Validated transactions.
            catch_up: Chunks of other servers' transactions added to the state first (all:
                None). A server whose event loop adds them between requests passes 1, so a
                large catch-up never holds one request for long. Not for a thread-safe
                state, whose queue its follow thread applies.
        """
        state, step = self._step(batch, catch_up)
        result, repeated = await state.score_and_add_async(*step)
        if repeated and self.on_repeated is not None:
            self.on_repeated(repeated)
        return result

    def _step(
        self, batch: TransactionBatch, catch_up: int | None
    ) -> tuple[OnlineState, tuple[Any, ...]]:
        """The state, and the arguments of its ``score_and_add_async`` for ``batch``."""
        state = self.state
        if state is None:
            raise RuntimeError("the scorer has no online state yet")
        if self.scored_elsewhere and not state.thread_safe:
            self.apply_scored_elsewhere(catch_up)
        q_cust, customers = entity_codes(batch.customer_id)
        q_term, terminals = entity_codes(batch.terminal_id)
        # refused before the state sees it (shared: before other replicas could read it)
        matrix = self._refuse_overflow(batch, self.features.stateless(batch))

        def scored(history: History) -> Scored:
            # windows (an amount over a minute mean): refused, the state takes nothing in
            self._refuse_overflow(
                batch, self.features.add_windows(matrix, batch, history, q_cust, q_term)
            )
            explained = self.model.explain(matrix, self._explain_from, self.contributions)
            score = explained.score
            reasons: list[list[str]] = [[] for _ in range(len(batch))]
            rows = explained.rows
            if len(rows):
                values = matrix if len(rows) == len(batch) else matrix[rows]
                codes = format_reasons(
                    self.features.names, values, explained.contributions, self.n_reasons
                )
                for row, code in zip(rows.tolist(), codes, strict=True):
                    reasons[row] = code
            return Scored(score, score >= self.threshold, reasons, matrix)

        step = (
            customers,
            terminals,
            batch.customer_id,
            batch.terminal_id,
            batch.time_ms,
            batch.amount,
            batch.transaction_id,
            scored,
        )
        return state, step
