"""The fraud model as stored and served: safe formats only, and per-prediction contributions.

XGBoost models are stored in XGBoost's own JSON format; scikit-learn models with skops, loaded
with an explicit allow-list of types. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.booster import (
    APPROX_CONTRIBUTIONS,
    CONTRIBUTIONS,
    VALUE,
    DensePredictor,
    dense_predictor,
)

if TYPE_CHECKING:
    from components.compiled_trees import CompiledTrees

__all__ = [
    "CONTRIBUTION_METHODS",
    "DEFAULT_CONTRIBUTIONS",
    "MODEL_FILES",
    "Explained",
    "FraudModel",
    "UnsafeModelError",
]

CONTRIBUTION_METHODS = ("approx", "exact")
"""How XGBoost contributions are computed: ``approx`` (Saabas: the change of the expected
value along the prediction path, per split feature; for a 150-tree model about 4 µs a
transaction in batches on one core, 13 µs for a single one) or ``exact`` (tree SHAP; about
1 ms a transaction). Both add up to the score's log-odds; their reason codes
agree on the top feature for about 9 alerts in 10 (``docs/serving.md``). Other model types
have one kind (exact for logistic regression, none for forests)."""
DEFAULT_CONTRIBUTIONS = "approx"

MODEL_FILES = {
    "xgboost": "model.json",
    "random_forest": "model.skops",
    "logistic_regression": "model.skops",
}

# The only types a skops model file may contain. Anything else is refused before loading.
SKOPS_TRUSTED = [
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.pipeline.Pipeline",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.int64",
    "builtins.slice",
    "builtins.dict",
    "builtins.list",
    "builtins.str",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.NoneType",
]


def skops_types(path: Path) -> set[str]:
    """Every ``module.Class`` recorded in a skops file's schema (read without loading it)."""
    import zipfile

    def walk(node: object, found: set[str]) -> set[str]:
        if isinstance(node, dict):
            if "__class__" in node:
                found.add(f"{node.get('__module__', '')}.{node['__class__']}")
            for value in node.values():
                walk(value, found)
        elif isinstance(node, list):
            for value in node:
                walk(value, found)
        return found

    with zipfile.ZipFile(path) as archive:
        return walk(json.loads(archive.read("schema.json")), set())


class UnsafeModelError(ValueError):
    """A model file contains types that are not on the allow-list."""


@dataclass(frozen=True)
class Explained:
    """Scores of a batch and the contributions of some of its rows.

    Attributes:
        score: Fraud score per row (float64).
        rows: Positions of the explained rows, ascending.
        contributions: One row per explained row, one column per feature (log-odds, bias
            excluded).
    """

    score: np.ndarray
    rows: np.ndarray
    contributions: np.ndarray


@dataclass
class FraudModel:
    """A trained classifier plus what is needed to apply it.

    Attributes:
        model_type: ``xgboost``, ``random_forest`` or ``logistic_regression``.
        estimator: The fitted model (an ``xgboost.Booster`` or a scikit-learn estimator).
        feature_names: Input columns, in order.
        fill_values: Values replacing NaN before predicting (only for models trained on
            imputed data, e.g. with SMOTE); empty means NaN is passed through.
    """

    model_type: str
    estimator: object
    feature_names: list[str]
    fill_values: dict[str, float] = field(default_factory=dict)
    _dense: DensePredictor | bool | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _compiled: CompiledTrees | bool | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def _matrix(self, X) -> np.ndarray:
        matrix = np.asarray(X[self.feature_names] if hasattr(X, "columns") else X, dtype=np.float32)
        if self.fill_values:
            fill = np.array([self.fill_values.get(n, 0.0) for n in self.feature_names], np.float32)
            matrix = np.where(np.isnan(matrix), fill, matrix)
        return matrix

    def predict(self, X) -> np.ndarray:
        """Fraud scores (probabilities) for the rows of ``X``."""
        matrix = self._matrix(X)
        if self.model_type == "xgboost":
            return self.estimator.inplace_predict(matrix, validate_features=False).astype(
                np.float64
            )
        return self.estimator.predict_proba(matrix)[:, 1]

    def contributions(self, X, method: str = DEFAULT_CONTRIBUTIONS) -> np.ndarray:
        """Per-row, per-feature contributions to the score's log-odds (bias excluded).

        XGBoost: Saabas (``approx``) or tree SHAP (``exact``) values from the booster, see
        :data:`CONTRIBUTION_METHODS`. Logistic regression: coefficient times standardised value.
        Random forest: not supported (raises).
        """
        _check_method(method)
        matrix = self._matrix(X)
        if self.model_type == "xgboost":
            import xgboost as xgb

            dm = xgb.DMatrix(matrix, feature_names=None)
            return self.estimator.predict(
                dm, pred_contribs=True, approx_contribs=method == "approx"
            )[:, :-1]
        if self.model_type == "logistic_regression":
            imputer, scaler, logreg = (step for _, step in self.estimator.steps)
            z = scaler.transform(imputer.transform(matrix))
            return z * logreg.coef_[0]
        raise NotImplementedError(f"reason codes are not available for {self.model_type} models")

    def explain(self, X, min_score: float | None, method: str = DEFAULT_CONTRIBUTIONS) -> Explained:
        """Scores of every row, and contributions of the rows scoring ``min_score`` or more.

        Made for a server's small batches. XGBoost models with ``approx`` contributions go
        through :mod:`components.compiled_trees` (the trees compiled with numba, checked
        against XGBoost to the bit when first used: about 13 µs for one transaction), else
        through :class:`components.booster.DensePredictor` (a fraction of the Python
        wrapper's per-call cost): explaining every row, XGBoost builds one DMatrix and reads
        scores and contributions from it; otherwise it scores in place and builds a DMatrix
        of the rows to explain only. Values equal :meth:`predict` and :meth:`contributions`.

        Args:
            X: Feature matrix (model column order) or frame.
            min_score: Explain rows scoring at least this (``-inf``: all; None: none).
            method: ``approx`` or ``exact`` (XGBoost only; see :data:`CONTRIBUTION_METHODS`).
        """
        _check_method(method)
        matrix = self._matrix(X)
        compiled = self.compiled_trees() if method == "approx" else None
        if compiled is not None:
            if min_score == -np.inf:
                score, contributions = compiled.explain(matrix)
                rows = np.arange(len(matrix))
                return Explained(score.astype(np.float64), rows, contributions[:, :-1])
            score = compiled.scores(matrix).astype(np.float64)
            rows = _rows(score, min_score)
            if not len(rows):
                return Explained(score, rows, np.zeros((0, matrix.shape[1])))
            return Explained(score, rows, compiled.explain(matrix[rows])[1][:, :-1])
        dense = self._dense_predictor()
        if dense is None:
            score = self.predict(matrix)
            rows = _rows(score, min_score)
            if not len(rows):
                return Explained(score, rows, np.zeros((0, matrix.shape[1])))
            sub = matrix if len(rows) == len(matrix) else matrix[rows]
            return Explained(score, rows, self.contributions(sub, method))
        kind = APPROX_CONTRIBUTIONS if method == "approx" else CONTRIBUTIONS
        if min_score == -np.inf:  # every row: scores and contributions from one DMatrix
            score, contributions = dense.predict(matrix, (VALUE, kind))
            rows = np.arange(len(matrix))
            return Explained(score.astype(np.float64), rows, contributions[:, :-1])
        score = dense.scores(matrix).astype(np.float64)  # in place: no DMatrix
        rows = _rows(score, min_score)
        if not len(rows):
            return Explained(score, rows, np.zeros((0, matrix.shape[1])))
        (contributions,) = dense.predict(matrix[rows], (kind,))
        return Explained(score, rows, contributions[:, :-1])

    def _dense_predictor(self) -> DensePredictor | None:
        """The booster's direct predictor, made on first use (None: not XGBoost, or the
        public API must be used)."""
        if self.model_type != "xgboost":
            return None
        if self._dense is None:
            self._dense = dense_predictor(self.estimator, len(self.feature_names)) or False
        return self._dense or None

    def compiled_trees(self) -> CompiledTrees | None:
        """The booster's trees compiled and checked against XGBoost, made on first use
        (None: not XGBoost, or not compilable, or not equal to XGBoost)."""
        if self.model_type != "xgboost":
            return None
        if self._compiled is None:
            from components.compiled_trees import compiled_trees

            self._compiled = compiled_trees(self.estimator, len(self.feature_names)) or False
        return self._compiled or None

    def feature_importance(self) -> dict[str, float]:
        """Global importance per feature (gain for XGBoost, impurity for forests, |coef|)."""
        if self.model_type == "xgboost":
            scores = self.estimator.get_score(importance_type="gain")
            return {
                n: float(scores.get(f"f{i}", scores.get(n, 0.0)))
                for i, n in enumerate(self.feature_names)
            }
        if self.model_type == "random_forest":
            return dict(
                zip(
                    self.feature_names, map(float, self.estimator.feature_importances_), strict=True
                )
            )
        coef = self.estimator.steps[-1][1].coef_[0]
        return dict(zip(self.feature_names, map(float, np.abs(coef)), strict=True))

    def save(self, folder: Path) -> list[Path]:
        """Write the model file and ``model_meta.json`` into ``folder``; return the paths."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MODEL_FILES[self.model_type]
        if self.model_type == "xgboost":
            self.estimator.save_model(str(path))
        else:
            import skops.io as sio

            sio.dump(self.estimator, path)
        meta = folder / "model_meta.json"
        meta.write_text(
            json.dumps(
                {
                    "model_type": self.model_type,
                    "model_file": path.name,
                    "feature_names": self.feature_names,
                    "fill_values": self.fill_values,
                },
                indent=2,
            )
        )
        return [path, meta]

    @classmethod
    def load(cls, folder: Path) -> FraudModel:
        """Load a model written by :meth:`save` (checksums are the caller's job: see bundle).

        Raises:
            UnsafeModelError: a skops file holds types outside the allow-list.
        """
        meta = json.loads((folder / "model_meta.json").read_text())
        path = folder / meta["model_file"]
        if meta["model_type"] == "xgboost":
            import xgboost as xgb

            booster = xgb.Booster()
            booster.load_model(str(path))
            estimator: object = booster
        else:
            import skops.io as sio

            # Our own allow-list, not skops' defaults: a model file may hold only these types.
            untrusted = sorted(skops_types(path) - set(SKOPS_TRUSTED))
            if untrusted:
                raise UnsafeModelError(
                    f"{path}: refusing to load types outside the allow-list: {untrusted}"
                )
            estimator = sio.load(path, trusted=sio.get_untrusted_types(file=path))
        return cls(
            meta["model_type"], estimator, meta["feature_names"], meta.get("fill_values", {})
        )


def _check_method(method: str) -> None:
    if method not in CONTRIBUTION_METHODS:
        raise ValueError(f"contributions {method!r}: choose one of {CONTRIBUTION_METHODS}")


def _rows(score: np.ndarray, min_score: float | None) -> np.ndarray:
    if min_score is None:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(score >= min_score)
