"""XGBoost scores and Saabas contributions from the booster's trees, compiled with numba.

Why: for the one to few transactions of a serving request, XGBoost's fixed per-call costs
(building a DMatrix, its prediction cache, thread setup: about 300 µs for a score plus
contributions) dwarf the work on 150 trees of depth 6 (about 5 µs). Walking the trees in a
small compiled loop costs only that work, and in batches it computes Saabas contributions
several times faster than XGBoost's single-threaded ``approx_contribs``.

This is a second implementation of the model's arithmetic, so it is never trusted blindly:
:func:`compiled_trees` builds it from the booster's own JSON dump, then scores a probe matrix
made of every split threshold (exactly, and one float step either side), NaN and random values
with both implementations, and returns None (the caller keeps using XGBoost) unless every
score and contribution agrees to the bit. It follows XGBoost's float32 arithmetic: the base
margin plus each tree's leaf in tree order; ``x < threshold`` goes left and a missing value
(NaN) follows the split's default; the node mean values of ``FillNodeMeanValues`` weighted by
the hessian sums; the sigmoid of ``binary:logistic``. Anything else (categorical splits, other
objectives or boosters, vector leaves) is not compiled.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from components.jit import kernel, prange

__all__ = ["CompiledTrees", "compiled_trees"]

log = logging.getLogger("fraudops.model")

PROBE_ROWS = 512
PARALLEL_FROM = 256
"""From this many rows on, :meth:`CompiledTrees.explain` walks rows on every core (a few rows
are done before the threads would wake)."""


@dataclass(frozen=True)
class CompiledTrees:
    """The trees of one binary:logistic gbtree booster, as flat arrays over all nodes.

    Attributes:
        roots: Index of each tree's root node.
        left, right: Children of each node (-1 at leaves).
        feature: Split feature of each node.
        threshold: Split threshold (float32); the leaf value at leaves.
        default_left: Whether a missing value goes left.
        mean: XGBoost's node mean value (``FillNodeMeanValues``), for Saabas contributions.
        base_margin: The model's base score as log-odds (float32).
        n_features: Input columns.
    """

    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    mean: np.ndarray
    base_margin: np.float32
    n_features: int

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """Fraud scores (float32) of ``matrix`` (2-D float32, NaN missing)."""
        return _scores(np.ascontiguousarray(matrix, dtype=np.float32), *self._arrays())

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and Saabas contributions ``(n, features + 1)`` (log-odds, bias last) of
        ``matrix``, as XGBoost's ``predict()`` and ``predict(pred_contribs=True,
        approx_contribs=True)``, in one walk of the trees."""
        explain = _explain_parallel if len(matrix) >= PARALLEL_FROM else _explain
        return explain(np.ascontiguousarray(matrix, dtype=np.float32), *self._arrays(), self.mean)

    def _arrays(self) -> tuple:
        return (
            self.roots,
            self.left,
            self.right,
            self.feature,
            self.threshold,
            self.default_left,
            self.base_margin,
        )


def from_booster(booster: object, n_features: int) -> CompiledTrees:
    """Flatten the trees of ``booster`` (an ``xgboost.Booster``).

    Raises:
        ValueError: the model is not a scalar-leaf, numeric-split binary:logistic gbtree.
    """
    learner = json.loads(booster.save_raw("json"))["learner"]  # type: ignore[attr-defined]
    objective = learner["objective"]["name"]
    gbm = learner["gradient_booster"]
    if objective != "binary:logistic" or gbm.get("name") != "gbtree":
        raise ValueError(f"only binary:logistic gbtree models compile, not {objective}")
    params = learner["learner_model_param"]
    if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) != 1:
        raise ValueError("only single-output models compile")
    base_score = np.float32(float(str(params["base_score"]).strip("[]")))
    one = np.float32(1.0)
    base_margin = np.float32(-np.log(one / base_score - one))  # XGBoost's ProbToMargin
    roots, left, right, feature, threshold, default_left, mean = [], [], [], [], [], [], []
    offset = 0
    for tree in gbm["model"]["trees"]:
        if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1 or any(tree["split_type"]):
            raise ValueError("vector leaves and categorical splits do not compile")
        lc = np.asarray(tree["left_children"], np.int64)
        rc = np.asarray(tree["right_children"], np.int64)
        leaf = lc < 0
        roots.append(offset)
        left.append(np.where(leaf, -1, lc + offset))
        right.append(np.where(leaf, -1, rc + offset))
        feature.append(np.asarray(tree["split_indices"], np.int64))
        cond = np.asarray(tree["split_conditions"], np.float32)
        threshold.append(cond)
        default_left.append(np.asarray(tree["default_left"], bool))
        mean.append(_node_means(lc, rc, cond, np.asarray(tree["sum_hessian"], np.float32)))
        offset += len(lc)
    if offset and int(np.concatenate(feature).max()) >= n_features:
        raise ValueError("a split uses a feature beyond the model's input columns")
    return CompiledTrees(
        roots=np.asarray(roots, np.int64),
        left=np.concatenate(left).astype(np.int64),
        right=np.concatenate(right).astype(np.int64),
        feature=np.concatenate(feature).astype(np.int64),
        threshold=np.concatenate(threshold),
        default_left=np.concatenate(default_left),
        mean=np.concatenate(mean),
        base_margin=base_margin,
        n_features=n_features,
    )


def _node_means(
    left: np.ndarray, right: np.ndarray, value: np.ndarray, hess: np.ndarray
) -> np.ndarray:
    """XGBoost's ``FillNodeMeanValue`` in float32: leaves their value, inner nodes the
    hessian-weighted mean of their children (children always have larger indices)."""
    mean = np.zeros(len(left), np.float32)
    for node in range(len(left) - 1, -1, -1):
        if left[node] < 0:
            mean[node] = value[node]
        else:
            a, b = left[node], right[node]
            total = mean[a] * hess[a]
            total += mean[b] * hess[b]
            mean[node] = total / hess[node]
    return mean


def probe_matrix(trees: CompiledTrees, rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows that exercise every split: thresholds exactly and one float step either side,
    NaN (the default direction), and random values."""
    rng = np.random.default_rng(seed)
    inner = trees.left >= 0
    by_feature = [trees.threshold[inner & (trees.feature == f)] for f in range(trees.n_features)]
    probe = rng.normal(0, 100, (rows, trees.n_features)).astype(np.float32)
    for f, cuts in enumerate(by_feature):
        if not len(cuts):
            continue
        picks = cuts[rng.integers(0, len(cuts), rows)]
        step = rng.integers(-1, 2, rows)
        near = np.where(
            step < 0,
            np.nextafter(picks, np.float32(-np.inf)),
            np.where(step > 0, np.nextafter(picks, np.float32(np.inf)), picks),
        )
        use = rng.random(rows)
        probe[:, f] = np.where(use < 0.6, near, probe[:, f])
        probe[use > 0.9, f] = np.nan
    return probe


def compiled_trees(booster: object, n_features: int) -> CompiledTrees | None:
    """:class:`CompiledTrees` of ``booster`` if they agree with XGBoost to the bit, else None.

    Compiles the kernels (cached on disk by numba after the first time).
    """
    import xgboost as xgb

    try:
        trees = from_booster(booster, n_features)
        probe = probe_matrix(trees)
        got = (trees.scores(probe), *trees.explain(probe))  # the parallel walk
        few = trees.explain(probe[: PARALLEL_FROM - 1])  # the serial one
        dm = xgb.DMatrix(probe, missing=np.nan)
        score = booster.predict(dm, validate_features=False)  # type: ignore[attr-defined]
        want = (
            score,
            score,
            booster.predict(  # type: ignore[attr-defined]
                dm, pred_contribs=True, approx_contribs=True, validate_features=False
            ),
        )
    except Exception as e:  # an unsupported model or an unusable numba: XGBoost it is
        log.info("trees not compiled (%s); scoring with XGBoost", e)
        return None
    few_want = (want[1][: len(few[0])], want[2][: len(few[0])])
    got, want = (*got, *few), (*want, *few_want)
    names = ("scores", "scores", "contributions", "scores", "contributions")
    for name, g, w in zip(names, got, want, strict=True):
        if g.shape != w.shape or not np.array_equal(g, w):
            diff = np.nanmax(np.abs(g - w)) if g.shape == w.shape else "shape"
            log.warning("compiled trees differ from XGBoost (%s: %s); using XGBoost", name, diff)
            return None
    return trees


@kernel
def _leaf(x, node, left, right, feature, threshold, default_left):
    while left[node] >= 0:
        v = x[feature[node]]
        if np.isnan(v):
            node = left[node] if default_left[node] else right[node]
        elif v < threshold[node]:
            node = left[node]
        else:
            node = right[node]
    return node


@kernel
def _scores(matrix, roots, left, right, feature, threshold, default_left, base_margin):
    n = matrix.shape[0]
    out = np.empty(n, np.float32)
    one = np.float32(1.0)
    for i in range(n):
        margin = base_margin
        x = matrix[i]
        for t in range(roots.shape[0]):
            margin += threshold[_leaf(x, roots[t], left, right, feature, threshold, default_left)]
        out[i] = one / (one + np.exp(-margin))
    return out


@kernel
def _explain_row(
    x, row, tree, path, roots, left, right, feature, threshold, default_left, mean, base_margin
):
    """One row's Saabas contributions into ``row`` (zeros), summed in XGBoost's order: each
    tree's contributions first (a feature split twice on a path adds up within the tree),
    then into the row; the base margin into the bias last. Returns the row's margin.
    ``tree`` (zeros) and ``path`` are scratch space."""
    f = row.shape[0] - 1
    margin = base_margin
    for t in range(roots.shape[0]):
        node = roots[t]
        value = mean[node]
        row[f] += value
        depth = 0
        while left[node] >= 0:
            split = feature[node]
            v = x[split]
            # _leaf's step, written out: as a shared helper (even numba-inlined) the walk
            # measured twice as slow
            if np.isnan(v):
                node = left[node] if default_left[node] else right[node]
            elif v < threshold[node]:
                node = left[node]
            else:
                node = right[node]
            if depth == path.shape[0]:
                path = np.concatenate((path, np.empty(depth, np.int64)))
            path[depth] = split
            depth += 1
            tree[split] += mean[node] - value
            value = mean[node]
        margin += threshold[node]
        for k in range(depth):
            split = path[k]
            if tree[split] != 0:  # the first of a feature's splits on the path
                row[split] += tree[split]
                tree[split] = 0
    row[f] += base_margin
    return margin


@kernel
def _explain(matrix, roots, left, right, feature, threshold, default_left, base_margin, mean):
    """Scores and Saabas contributions ``(n, features + 1)`` of every row."""
    n, f = matrix.shape
    scores = np.empty(n, np.float32)
    out = np.zeros((n, f + 1), np.float32)
    tree, path = np.zeros(f + 1, np.float32), np.empty(64, np.int64)
    one = np.float32(1.0)
    for i in range(n):
        margin = _explain_row(
            matrix[i], out[i], tree, path,
            roots, left, right, feature, threshold, default_left, mean, base_margin,
        )  # fmt: skip
        scores[i] = one / (one + np.exp(-margin))
    return scores, out


# Written out again rather than one source compiled twice: numba's disk cache keys a kernel by
# its function, so a serial and a parallel compilation of one function share a cache entry
# and one silently runs the other's code (measured: the "parallel" walk ran serially).
@kernel(parallel=True)
def _explain_parallel(
    matrix, roots, left, right, feature, threshold, default_left, base_margin, mean
):
    """:func:`_explain` with the rows spread over every core."""
    n, f = matrix.shape
    scores = np.empty(n, np.float32)
    out = np.zeros((n, f + 1), np.float32)
    one = np.float32(1.0)
    for i in prange(n):
        tree, path = np.zeros(f + 1, np.float32), np.empty(64, np.int64)
        margin = _explain_row(
            matrix[i], out[i], tree, path,
            roots, left, right, feature, threshold, default_left, mean, base_margin,
        )  # fmt: skip
        scores[i] = one / (one + np.exp(-margin))
    return scores, out


def compile_kernels() -> None:
    """Compile (or load from the cache) the tree kernels now, on a one-leaf tree (e.g. while
    building an image, so that servers start without compiling)."""
    one = np.zeros(1, np.int64)
    trees = CompiledTrees(
        roots=one,
        left=one - 1,
        right=one - 1,
        feature=one,
        threshold=np.zeros(1, np.float32),
        default_left=np.zeros(1, bool),
        mean=np.zeros(1, np.float32),
        base_margin=np.float32(0.0),
        n_features=1,
    )
    trees.scores(np.zeros((1, 1), np.float32))
    trees.explain(np.zeros((1, 1), np.float32))
