"""XGBoost scores and contributions for small batches, without the Python wrapper's per-call cost.

Measured for one transaction (147 trees): ``xgboost.DMatrix(...)`` and two ``Booster.predict``
calls (score, Saabas contributions) take about 340 µs, of which about 180 µs are the wrapper's
Python (argument JSON, feature checks, a class built for every result); the C library's own
fixed costs are the rest (a DMatrix reads the cgroup CPU limits twice, ~80 µs), the trees a
few µs. :class:`DensePredictor` calls the C functions those wrappers call
(``XGBoosterPredictFromDense``, ``XGDMatrixCreateFromDense``, ``XGBoosterPredictFromDMatrix``:
XGBoost's stable C API) with their arguments encoded once. It reaches the library through
``xgboost.core``, which is not public Python API, so :func:`dense_predictor` checks it against
``Booster.predict`` on a probe matrix first and returns None when anything differs (the caller
then uses the public API).
"""

from __future__ import annotations

import ctypes
import json
import logging
from collections.abc import Callable

import numpy as np

__all__ = ["DensePredictor", "dense_predictor"]

log = logging.getLogger("fraudops.model")

VALUE, CONTRIBUTIONS, APPROX_CONTRIBUTIONS = 0, 2, 3
"""``type`` of ``XGBoosterPredictFromDMatrix``: transformed score, tree SHAP, Saabas."""


class DensePredictor:
    """Predictions of one booster for float32 matrices, single-threaded by default.

    Args:
        booster: A loaded ``xgboost.Booster`` (not changed).
        n_threads: Threads for building the DMatrix (predicting uses the booster's
            ``nthread``); 1 suits a server's small batches.
    """

    def __init__(self, booster: object, n_threads: int = 1) -> None:
        from xgboost import core

        self._lib = core._LIB
        self._check = core._check_call
        self._ulong = core.c_bst_ulong
        self.booster = booster
        self._dmatrix_args = json.dumps({"missing": float("nan"), "nthread": n_threads}).encode()
        self._predict_args = {
            kind: json.dumps(
                {
                    "type": kind,
                    "training": False,
                    "iteration_begin": 0,
                    "iteration_end": 0,
                    "strict_shape": False,
                }
            ).encode()
            for kind in (VALUE, CONTRIBUTIONS, APPROX_CONTRIBUTIONS)
        }
        self._inplace_args = json.dumps(
            {
                "type": VALUE,
                "training": False,
                "iteration_begin": 0,
                "iteration_end": 0,
                "missing": float("nan"),
                "strict_shape": False,
                "cache_id": 0,
            }
        ).encode()

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of ``matrix`` (2-D float32, NaN missing) without a DMatrix, as
        ``Booster.inplace_predict`` computes them (float32 copy)."""
        data = np.ascontiguousarray(matrix, dtype=np.float32)
        return self._call(
            self._lib.XGBoosterPredictFromDense,
            self.booster.handle,  # type: ignore[attr-defined]
            _interface(data),
            self._inplace_args,
            ctypes.c_void_p(),
        )

    def _call(self, function: Callable[..., int], *args: object) -> np.ndarray:
        """Call a prediction function of the C API; its result as a numpy copy (the booster
        owns the buffer until its next prediction)."""
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        out = ctypes.POINTER(ctypes.c_float)()
        self._check(function(*args, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(out)))
        size = tuple(int(shape[i]) for i in range(dims.value))
        return np.ctypeslib.as_array(out, shape=(int(np.prod(size)),)).reshape(size).copy()

    def dmatrix(self, matrix: np.ndarray) -> _DMatrix:
        """A DMatrix of ``matrix`` (2-D float32, NaN missing), as a context manager."""
        data = np.ascontiguousarray(matrix, dtype=np.float32)
        handle = ctypes.c_void_p()
        self._check(
            self._lib.XGDMatrixCreateFromDense(
                _interface(data), self._dmatrix_args, ctypes.byref(handle)
            )
        )
        return _DMatrix(self, handle, data)

    def predict(self, matrix: np.ndarray, kinds: tuple[int, ...]) -> list[np.ndarray]:
        """One DMatrix of ``matrix``, one prediction per kind (see :meth:`_DMatrix.predict`)."""
        with self.dmatrix(matrix) as dm:
            return [dm.predict(kind) for kind in kinds]


class _DMatrix:
    """A native DMatrix handle of a :class:`DensePredictor` (freed on ``__exit__``)."""

    __slots__ = ("data", "handle", "owner")

    def __init__(self, owner: DensePredictor, handle: ctypes.c_void_p, data: np.ndarray) -> None:
        self.owner = owner
        self.handle = handle
        self.data = data  # the DMatrix was built from it: keep it alive as long

    def __enter__(self) -> _DMatrix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner._check(self.owner._lib.XGDMatrixFree(self.handle))

    def predict(self, kind: int) -> np.ndarray:
        """Scores ``(n,)`` for :data:`VALUE`; for :data:`CONTRIBUTIONS` and
        :data:`APPROX_CONTRIBUTIONS`, ``(n, features + 1)`` with the bias last. float32 copies.
        """
        o = self.owner
        return o._call(
            o._lib.XGBoosterPredictFromDMatrix,
            o.booster.handle,  # type: ignore[attr-defined]
            self.handle,
            o._predict_args[kind],
        )


def _interface(data: np.ndarray) -> bytes:
    """The ``__array_interface__`` JSON XGBoost reads a C-contiguous float32 matrix from."""
    rows, cols = data.shape
    return (
        b'{"data": [%d, true], "strides": null, "descr": [["", "<f4"]], '
        b'"typestr": "<f4", "shape": [%d, %d], "version": 3}' % (data.ctypes.data, rows, cols)
    )


def dense_predictor(booster: object, n_features: int, n_threads: int = 1) -> DensePredictor | None:
    """A :class:`DensePredictor` that agrees with ``Booster.predict``, or None.

    The probe has NaN, zeros and random values; scores (in place and from a DMatrix) and both
    kinds of contributions must equal the public API's to the bit.
    """
    import xgboost as xgb

    rng = np.random.default_rng(0)
    probe = rng.normal(0, 100, (3, n_features)).astype(np.float32)
    probe[0, ::2] = np.nan
    probe[1] = 0.0
    try:
        fast = DensePredictor(booster, n_threads)
        got = [
            fast.scores(probe),
            *fast.predict(probe, (VALUE, CONTRIBUTIONS, APPROX_CONTRIBUTIONS)),
        ]
        dm = xgb.DMatrix(probe, missing=np.nan)
        want = [
            booster.inplace_predict(probe, validate_features=False),  # type: ignore[attr-defined]
            booster.predict(dm, validate_features=False),  # type: ignore[attr-defined]
            booster.predict(dm, pred_contribs=True, validate_features=False),  # type: ignore[attr-defined]
            booster.predict(  # type: ignore[attr-defined]
                dm, pred_contribs=True, approx_contribs=True, validate_features=False
            ),
        ]
    except Exception as e:  # another xgboost's internals: use the public API
        log.warning("xgboost's C API cannot be used directly (%s); using Booster.predict", e)
        return None
    if all(g.shape == w.shape and np.array_equal(g, w) for g, w in zip(got, want, strict=True)):
        return fast
    log.warning("xgboost's C API gave other predictions than Booster.predict; using the latter")
    return None
