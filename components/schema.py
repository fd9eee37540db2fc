"""The canonical transaction schema shared by every part of fraudops.

Every loader produces a frame with these columns (see ``docs/data.md``); validation checks it,
features read it, the model server accepts it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CATEGORICAL_FIELDS",
    "CONTEXT_FIELDS",
    "FIELDS",
    "ID_FIELDS",
    "LABEL",
    "LABEL_FIELDS",
    "MAX_MAGNITUDE",
    "REQUIRED_FIELDS",
    "Field",
    "field",
]


@dataclass(frozen=True)
class Field:
    """One column of the canonical schema.

    Attributes:
        name: Column name.
        kind: ``"string"``, ``"timestamp"``, ``"float"``, ``"int"`` or ``"category"``.
        required: Whether every row must have a value (labels are required only for training).
        description: What the column means, for docs and error messages.
        minimum: Smallest allowed value for numeric columns.
        allowed: Allowed values for categorical columns (``None``: any value).
    """

    name: str
    kind: str
    required: bool
    description: str
    minimum: float | None = None
    allowed: tuple[str, ...] | None = None


TRANSACTION_TYPES = ("purchase", "withdrawal", "transfer", "payment")
CHANNELS = ("pos", "online", "atm", "mobile")
ACCOUNT_TYPES = ("checking", "savings", "credit", "business")
MERCHANT_CATEGORIES = (
    "grocery",
    "restaurant",
    "fuel",
    "retail",
    "electronics",
    "travel",
    "entertainment",
    "health",
    "cash",
    "digital_goods",
)

FIELDS: tuple[Field, ...] = (
    Field("transaction_id", "string", True, "Unique id of the transaction."),
    Field("timestamp", "timestamp", True, "When the transaction happened (UTC)."),
    Field("customer_id", "string", True, "The card or account holder."),
    Field("terminal_id", "string", True, "The terminal or merchant where the card was used."),
    Field("amount", "float", True, "Amount in the account currency; never negative.", minimum=0.0),
    Field(
        "transaction_type",
        "category",
        False,
        "Kind of transaction.",
        allowed=TRANSACTION_TYPES,
    ),
    Field("channel", "category", False, "Where it was made.", allowed=CHANNELS),
    Field("account_type", "category", False, "Type of the paying account.", allowed=ACCOUNT_TYPES),
    Field("account_balance", "float", False, "Balance before the transaction."),
    Field("account_age_days", "float", False, "Age of the account in days.", minimum=0.0),
    Field(
        "merchant_category",
        "category",
        False,
        "Category of the merchant (open set: unknown values are allowed).",
    ),
    Field("is_fraud", "int", False, "Label: 1 fraud, 0 genuine (absent at scoring time)."),
    Field(
        "label_known_at",
        "timestamp",
        False,
        "When the label became known (chargeback or confirmation); features only use labels "
        "known before the transaction being scored.",
    ),
    Field(
        "fraud_scenario",
        "string",
        False,
        "Synthetic data only: which fraud pattern produced the row ('' for genuine rows). "
        "Never a feature.",
    ),
)

_BY_NAME = {f.name: f for f in FIELDS}
REQUIRED_FIELDS = tuple(f.name for f in FIELDS if f.required)
MAX_MAGNITUDE = 1e15
"""Largest absolute value of a numeric field: ample for any currency, and far enough below
float32's range (3.4e38, the models' input type) that a customer's windowed sums of such
amounts stay finite."""
ID_FIELDS = ("transaction_id", "customer_id", "terminal_id")
LABEL = "is_fraud"
LABEL_FIELDS = ("is_fraud", "label_known_at", "fraud_scenario")
CATEGORICAL_FIELDS = tuple(f.name for f in FIELDS if f.kind == "category")
CONTEXT_FIELDS = tuple(f.name for f in FIELDS if not f.required and f.name not in LABEL_FIELDS)


def field(name: str) -> Field:
    """Return the schema entry for ``name``.

    Raises:
        KeyError: ``name`` is not a canonical column.
    """
    return _BY_NAME[name]
