"""XGBoost scores and Saabas contributions from the booster's trees, compiled with numba.

Why: for the one to few transactions of a serving request, XGBoost's fixed per-call costs
(building a DMatrix, its prediction cache, thread setup: about 300 µs for a score plus
contributions) dwarf the work on 150 trees of depth 6 (a few µs). Walking the trees in a
small compiled loop costs only that work, and in batches it computes Saabas contributions
several times faster than XGBoost's single-threaded ``approx_contribs``.

How: every tree is padded to the depth of the deepest one (a leaf above that depth becomes
pass-through nodes over copies of itself) and stored level by level, so that node ``p``'s
children are ``2p + 1`` and ``2p + 2``. A walk is then ``depth`` steps without a branch on
the data, and rows go through one tree at a time in blocks: the tree stays in the L1 cache
and the steps of the block's rows overlap. Saabas contributions depend only on the leaf a row
reaches, so each leaf carries its path's contributions, already summed within the tree:
explaining a row costs ``depth`` additions per tree.

This is a second implementation of the model's arithmetic, so it is never trusted blindly:
:func:`compiled_trees` builds it from the booster's own JSON dump, then scores a probe matrix
made of every split threshold (exactly, and one float step either side), NaN and random values
with both implementations, and returns None (the caller keeps using XGBoost) unless every
score and contribution agrees to the bit. It follows XGBoost's float32 arithmetic: the base
margin plus each tree's leaf in tree order; ``x < threshold`` goes left and a missing value
(NaN) follows the split's default; the node mean values of ``FillNodeMeanValues`` weighted by
the hessian sums, a feature's changes along a path summed within the tree before they are
added to the row; the sigmoid of ``binary:logistic``. Anything else (categorical splits,
other objectives or boosters, vector leaves) is not compiled.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from components.jit import kernel

__all__ = ["CompiledTrees", "compiled_trees"]

log = logging.getLogger("fraudops.model")

PROBE_ROWS = 500  # not a multiple of BLOCK: the last block is partly filled
BLOCK = 32
"""Rows walked through one tree together."""
MAX_TABLE_BYTES = 256 * 2**20
"""Padded trees bigger than this (very deep trees) are left to XGBoost."""


@dataclass(frozen=True)
class CompiledTrees:
    """The trees of one binary:logistic gbtree booster, padded to complete binary trees.

    Row ``t`` of each array is tree ``t``; inner node ``p`` has children ``2p + 1`` (left) and
    ``2p + 2``; the ``2**depth`` leaves follow the ``2**depth - 1`` inner nodes.

    Attributes:
        split: Whether an inner node is one of the model's splits (else pass-through).
        feature: Split feature of each inner node (0 when pass-through).
        threshold: Split threshold (float32; +inf when pass-through).
        default_left: Whether a missing value goes left.
        leaf: Leaf values ``(trees, 2**depth)``.
        reason_feature: For each leaf, the features split on its path ``(trees, 2**depth,
            depth)``; unused slots hold feature 0 with a contribution of 0.0.
        reason_value: Their contributions (log-odds, float32), summed within the tree.
        root_mean: Each tree's root node mean (its share of the bias).
        base_margin: The model's base score as log-odds (float32).
        n_features: Input columns.
    """

    split: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    leaf: np.ndarray
    reason_feature: np.ndarray
    reason_value: np.ndarray
    root_mean: np.ndarray
    base_margin: np.float32
    n_features: int

    @property
    def depth(self) -> int:
        return self.reason_feature.shape[2]

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """Fraud scores (float32) of ``matrix`` (2-D float32, NaN missing)."""
        return self._walk(matrix, False)[0]

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and Saabas contributions ``(n, features + 1)`` (log-odds, bias last) of
        ``matrix``, as XGBoost's ``predict()`` and ``predict(pred_contribs=True,
        approx_contribs=True)``, in one walk of the trees."""
        return self._walk(matrix, True)

    def _walk(self, matrix: np.ndarray, explain: bool) -> tuple[np.ndarray, np.ndarray]:
        return _walk(
            np.ascontiguousarray(matrix, dtype=np.float32),
            explain,
            self.feature,
            self.threshold,
            self.default_left,
            self.leaf,
            self.reason_feature,
            self.reason_value,
            self.root_mean,
            self.base_margin,
        )


def from_booster(booster: object, n_features: int) -> CompiledTrees:
    """Pad and lay out the trees of ``booster`` (an ``xgboost.Booster``).

    Raises:
        ValueError: the model is not a scalar-leaf, numeric-split binary:logistic gbtree, or
            its padded trees would take more than :data:`MAX_TABLE_BYTES`.
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
    trees = []
    for tree in gbm["model"]["trees"]:
        if int(tree["tree_param"].get("size_leaf_vector", 1)) > 1 or any(tree["split_type"]):
            raise ValueError("vector leaves and categorical splits do not compile")
        left = np.asarray(tree["left_children"], np.int64)
        right = np.asarray(tree["right_children"], np.int64)
        value = np.asarray(tree["split_conditions"], np.float32)
        feature = np.asarray(tree["split_indices"], np.int64)
        if (feature[left >= 0] >= n_features).any():
            raise ValueError("a split uses a feature beyond the model's input columns")
        mean = _node_means(left, right, value, np.asarray(tree["sum_hessian"], np.float32))
        trees.append((left, right, value, feature, np.asarray(tree["default_left"], bool), mean))
    depth = max((_depth(t[0], t[1]) for t in trees), default=0)
    n_leaves = 2**depth
    if len(trees) * n_leaves * (depth * 8 + 4) > MAX_TABLE_BYTES:  # 4-byte reasons and leaves
        raise ValueError(f"trees of depth {depth} are too deep to compile")
    shape = (len(trees), n_leaves - 1)
    laid_out = CompiledTrees(
        split=np.zeros(shape, bool),
        feature=np.zeros(shape, np.int32),
        threshold=np.full(shape, np.inf, np.float32),
        default_left=np.ones(shape, bool),
        leaf=np.zeros((len(trees), n_leaves), np.float32),
        reason_feature=np.zeros((len(trees), n_leaves, depth), np.int32),
        reason_value=np.zeros((len(trees), n_leaves, depth), np.float32),
        root_mean=np.asarray([t[5][0] for t in trees], np.float32),
        base_margin=base_margin,
        n_features=n_features,
    )
    for t, tree in enumerate(trees):
        _lay_out(laid_out, t, depth, *tree)
    return laid_out


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    depth = np.zeros(len(left), np.int64)
    for node in range(len(left)):  # a parent always comes before its children
        if left[node] >= 0:
            depth[left[node]] = depth[right[node]] = depth[node] + 1
    return int(depth.max())


def _lay_out(
    out: CompiledTrees,
    t: int,
    depth: int,
    left: np.ndarray,
    right: np.ndarray,
    value: np.ndarray,
    feature: np.ndarray,
    default_left: np.ndarray,
    mean: np.ndarray,
) -> None:
    """Write tree ``t`` into ``out``: its splits at their complete-tree positions, and each
    leaf (with its path's contributions) into every padded leaf below it."""
    # (node, complete-tree position, level, contributions so far by feature in path order)
    stack: list[tuple[int, int, int, dict[int, np.float32]]] = [(0, 0, 0, {})]
    while stack:
        node, at, level, sums = stack.pop()
        if left[node] < 0:
            span = 2 ** (depth - level)
            first = (at + 1) * span - 2**depth  # the first padded leaf below ``at``
            leaves = slice(first, first + span)
            out.leaf[t, leaves] = value[node]
            for k, (f, s) in enumerate((f, s) for f, s in sums.items() if s != 0):
                out.reason_feature[t, leaves, k] = f
                out.reason_value[t, leaves, k] = s
            continue
        f = int(feature[node])
        out.split[t, at] = True
        out.feature[t, at] = f
        out.threshold[t, at] = value[node]
        out.default_left[t, at] = default_left[node]
        for child, child_at in ((left[node], 2 * at + 1), (right[node], 2 * at + 2)):
            change = mean[child] - mean[node]
            stack.append(
                (child, child_at, level + 1, {**sums, f: sums.get(f, np.float32(0)) + change})
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
    by_feature = [
        trees.threshold[trees.split & (trees.feature == f)] for f in range(trees.n_features)
    ]
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
        got = (trees.scores(probe), *trees.explain(probe))
        dm = xgb.DMatrix(probe, missing=np.nan)
        score = booster.predict(dm, validate_features=False)  # type: ignore[attr-defined]
        contributions = booster.predict(  # type: ignore[attr-defined]
            dm, pred_contribs=True, approx_contribs=True, validate_features=False
        )
    except Exception as e:  # an unsupported model or an unusable numba: XGBoost it is
        log.info("trees not compiled (%s); scoring with XGBoost", e)
        return None
    want = (score, score, contributions)
    for name, g, w in zip(("scores", "scores", "contributions"), got, want, strict=True):
        if g.shape != w.shape or not np.array_equal(g, w):
            diff = np.nanmax(np.abs(g - w)) if g.shape == w.shape else "shape"
            log.warning("compiled trees differ from XGBoost (%s: %s); using XGBoost", name, diff)
            return None
    return trees


@kernel
def _block(
    matrix, start, stop, feature, threshold, default_left, leaf,
    reason_feature, reason_value, root_mean, margin, contributions, nodes,
):  # fmt: skip
    """Rows ``start:stop`` through every tree, one tree at a time: each tree's leaf into
    ``margin`` and, when ``contributions`` has rows, its contributions (bias last)."""
    n = stop - start
    inner = feature.shape[1]
    depth = reason_feature.shape[2]
    explain = contributions.shape[0] > 0
    bias = contributions.shape[1] - 1
    for t in range(feature.shape[0]):
        nodes[:n] = 0
        for _ in range(depth):
            for j in range(n):
                node = nodes[j]
                v = matrix[start + j, feature[t, node]]
                # NaN compares False: it goes left only by default
                go_left = (v < threshold[t, node]) | ((v != v) & default_left[t, node])
                nodes[j] = 2 * node + 2 - go_left
        for j in range(n):
            at = nodes[j] - inner
            margin[start + j] += leaf[t, at]
            if explain:
                row = contributions[start + j]
                row[bias] += root_mean[t]
                for k in range(depth):
                    row[reason_feature[t, at, k]] += reason_value[t, at, k]


@kernel
def _finish(margin, contributions, base_margin):
    """The sigmoid of every margin; the base margin added to every bias last."""
    one = np.float32(1.0)
    scores = np.empty(margin.shape[0], np.float32)
    for i in range(margin.shape[0]):
        scores[i] = one / (one + np.exp(-margin[i]))
    bias = contributions.shape[1] - 1
    for i in range(contributions.shape[0]):
        contributions[i, bias] += base_margin
    return scores, contributions


@kernel
def _walk(
    matrix, explain, feature, threshold, default_left, leaf,
    reason_feature, reason_value, root_mean, base_margin,
):  # fmt: skip
    """Scores and (if ``explain``) contributions ``(n, features + 1)`` of every row."""
    n, f = matrix.shape
    margin = np.full(n, base_margin, np.float32)
    contributions = np.zeros((n if explain else 0, f + 1), np.float32)
    nodes = np.empty(BLOCK, np.int64)
    for start in range(0, n, BLOCK):
        _block(
            matrix, start, min(start + BLOCK, n), feature, threshold, default_left, leaf,
            reason_feature, reason_value, root_mean, margin, contributions, nodes,
        )  # fmt: skip
    return _finish(margin, contributions, base_margin)


def compile_kernels() -> None:
    """Compile (or load from the cache) the tree kernels now, on one single-leaf tree (e.g.
    while building an image, so that servers start without compiling)."""
    trees = CompiledTrees(
        split=np.zeros((1, 0), bool),
        feature=np.zeros((1, 0), np.int32),
        threshold=np.zeros((1, 0), np.float32),
        default_left=np.zeros((1, 0), bool),
        leaf=np.zeros((1, 1), np.float32),
        reason_feature=np.zeros((1, 1, 0), np.int32),
        reason_value=np.zeros((1, 1, 0), np.float32),
        root_mean=np.zeros(1, np.float32),
        base_margin=np.float32(0.0),
        n_features=1,
    )
    trees.scores(np.zeros((1, 1), np.float32))
    trees.explain(np.zeros((1, 1), np.float32))
