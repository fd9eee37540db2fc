"""Split transactions by time into training, validation and test windows.

Windows are laid out backwards from the end of the data, separated by gaps equal to the label
delay, so that every label a model is trained or tuned on was known before the window it is
judged on began.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

__all__ = ["TimeWindows", "explicit_windows", "plan_windows", "split_by_time"]


@dataclass(frozen=True)
class TimeWindows:
    """Half-open ``[start, end)`` windows, UTC."""

    train_start: pd.Timestamp
    train_end: pd.Timestamp
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def as_dict(self) -> dict[str, str]:
        """ISO strings, for reports and the model card."""
        return {k: v.isoformat() for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> TimeWindows:
        """Inverse of :meth:`as_dict`."""
        return cls(**{k: _utc(v) for k, v in data.items()})


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def plan_windows(
    timestamps: pd.Series,
    test_days: float = 7,
    valid_days: float = 7,
    train_days: float | None = None,
    gap_days: float = 7,
    burn_in_days: float = 7,
    end: str | pd.Timestamp | None = None,
) -> TimeWindows:
    """Lay out the windows backwards from the end of the data (or ``end``).

    Args:
        timestamps: Transaction times of the data.
        test_days: Length of the test window.
        valid_days: Length of the validation window.
        train_days: Length of the training window (default: all the data after the burn-in).
        gap_days: Gap between windows (use the label delay).
        burn_in_days: Days at the start of the data kept out of training because their
            windowed features lack history.
        end: End of the test window (default: just after the last transaction).

    Raises:
        ValueError: the data is too short for these windows; the message gives the numbers.
    """
    first, last = timestamps.min(), timestamps.max()
    test_end = _utc(end) if end is not None else last + pd.Timedelta(seconds=1)
    day = pd.Timedelta(days=1)
    test_start = test_end - test_days * day
    valid_end = test_start - gap_days * day
    valid_start = valid_end - valid_days * day
    train_end = valid_start - gap_days * day
    earliest = first + burn_in_days * day
    train_start = earliest if train_days is None else max(train_end - train_days * day, earliest)
    if train_end - train_start < day:
        span = (last - first) / day
        needed = test_days + valid_days + 2 * gap_days + burn_in_days + 1
        raise ValueError(
            f"the data covers {span:.1f} days, too short for test {test_days} + validation "
            f"{valid_days} + 2 gaps of {gap_days} + burn-in {burn_in_days} + at least 1 training "
            f"day ({needed:.0f} days); generate more days or shorten the windows"
        )
    return TimeWindows(train_start, train_end, valid_start, valid_end, test_start, test_end)


def explicit_windows(**bounds: str) -> TimeWindows:
    """Windows from explicit dates (``train_start=...`` and so on, all six required)."""
    return TimeWindows(**{k: _utc(v) for k, v in bounds.items()})


def split_by_time(timestamps: pd.Series, windows: TimeWindows) -> dict[str, pd.Series]:
    """Boolean masks of the rows in each window: ``{"train", "valid", "test"}``.

    Raises:
        ValueError: a window holds no rows.
    """
    masks = {
        "train": (timestamps >= windows.train_start) & (timestamps < windows.train_end),
        "valid": (timestamps >= windows.valid_start) & (timestamps < windows.valid_end),
        "test": (timestamps >= windows.test_start) & (timestamps < windows.test_end),
    }
    empty = [name for name, mask in masks.items() if not mask.any()]
    if empty:
        raise ValueError(
            f"no transactions in the {', '.join(empty)} window(s): {windows.as_dict()}"
        )
    return masks
