"""Synthetic card-portfolio transactions with labelled fraud scenarios.

The generator follows the structure of the simulator in the *Reproducible Machine Learning for
Credit Card Fraud Detection* handbook (customers and terminals on a map, daily Poisson
transaction counts, compromised terminals and cards) and adds account context, account
takeover, card-testing bursts, label delays and a drift mode. Everything is vectorised with
numpy; the portfolio depends only on the seed and its size, so a later period generated with
the same seed has the same customers and terminals.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from components.schema import ACCOUNT_TYPES, MERCHANT_CATEGORIES

__all__ = [
    "SCENARIOS",
    "GeneratorConfig",
    "Portfolio",
    "generate_portfolio",
    "generate_transactions",
]

SCENARIOS = (
    "compromised_terminal",
    "stolen_card",
    "account_takeover",
    "card_testing",
    "mobile_wallet_fraud",  # only in drift mode: the "new pattern"
)
_DAY = 86_400
_CATEGORY_WEIGHTS = np.array([0.24, 0.14, 0.09, 0.16, 0.05, 0.04, 0.07, 0.05, 0.08, 0.08])
_ACCOUNT_WEIGHTS = np.array([0.55, 0.1, 0.3, 0.05])


@dataclass(frozen=True)
class GeneratorConfig:
    """Size, period and behaviour of a generated data set.

    Attributes:
        n_customers: Card holders in the portfolio.
        n_terminals: Terminals and merchants (about a quarter of them online).
        n_days: Days of transactions to generate.
        start_date: First day (UTC) of the period.
        seed: Seed of the portfolio and of the period; same seed, same output.
        drift: Generate changed behaviour: higher amounts, more mobile/online traffic and a
            new fraud pattern (``mobile_wallet_fraud``).
        fraud_intensity: Multiplier on the daily number of fraud incidents.
        label_delay_days: Mean days until a fraud label becomes known (chargeback delay).
        genuine_label_days: Days until a genuine transaction is confirmed (dispute window).
    """

    n_customers: int = 2_000
    n_terminals: int = 4_000
    n_days: int = 60
    start_date: str = "2026-04-01"
    seed: int = 7
    drift: bool = False
    fraud_intensity: float = 1.0
    label_delay_days: float = 7.0
    genuine_label_days: float = 30.0

    @classmethod
    def for_transactions(cls, n_transactions: int, n_days: int = 60, **kwargs) -> GeneratorConfig:
        """Size a portfolio so that ``n_days`` hold about ``n_transactions`` transactions."""
        per_customer_day = 2.0  # mean of the daily rate drawn for each customer
        n_customers = max(10, round(n_transactions / (n_days * per_customer_day)))
        return cls(n_customers=n_customers, n_terminals=2 * n_customers, n_days=n_days, **kwargs)


@dataclass(frozen=True)
class Portfolio:
    """Customers and terminals, as column arrays (index = position)."""

    customer_x: np.ndarray
    customer_y: np.ndarray
    mean_amount: np.ndarray
    daily_rate: np.ndarray
    online_share: np.ndarray
    account_type: np.ndarray
    account_age0: np.ndarray
    balance: np.ndarray
    terminal_x: np.ndarray
    terminal_y: np.ndarray
    terminal_category: np.ndarray
    terminal_kind: np.ndarray  # 0 = point of sale, 1 = online merchant, 2 = ATM

    @property
    def n_customers(self) -> int:
        return len(self.customer_x)

    @property
    def n_terminals(self) -> int:
        return len(self.terminal_x)


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(p).encode()) for p in parts])


def generate_portfolio(config: GeneratorConfig) -> Portfolio:
    """Draw the customers and terminals of the portfolio (depends on seed and sizes only)."""
    rng = _rng("portfolio", config.seed, config.n_customers, config.n_terminals)
    nc, nt = config.n_customers, config.n_terminals
    category = rng.choice(len(MERCHANT_CATEGORIES), size=nt, p=_CATEGORY_WEIGHTS)
    cash = MERCHANT_CATEGORIES.index("cash")
    digital = MERCHANT_CATEGORIES.index("digital_goods")
    kind = np.where(
        category == cash,
        2,
        np.where((category == digital) | (rng.random(nt) < 0.2), 1, 0),
    )
    return Portfolio(
        customer_x=rng.uniform(0, 100, nc),
        customer_y=rng.uniform(0, 100, nc),
        mean_amount=rng.uniform(5, 100, nc),
        daily_rate=rng.uniform(0, 4, nc),
        online_share=rng.beta(2, 6, nc),
        account_type=rng.choice(len(ACCOUNT_TYPES), size=nc, p=_ACCOUNT_WEIGHTS),
        account_age0=rng.exponential(1200, nc) + 30,
        balance=rng.lognormal(np.log(2500), 0.9, nc),
        terminal_x=rng.uniform(0, 100, nt),
        terminal_y=rng.uniform(0, 100, nt),
        terminal_category=category,
        terminal_kind=kind,
    )


def _nearest(
    kind_idx: np.ndarray, portfolio: Portfolio, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Index (into the portfolio's terminals) of the terminal of a kind nearest to each point."""
    tree = cKDTree(
        np.column_stack([portfolio.terminal_x[kind_idx], portfolio.terminal_y[kind_idx]])
    )
    _, pos = tree.query(np.column_stack([x, y]), k=1)
    return kind_idx[pos]


def _genuine(
    config: GeneratorConfig, p: Portfolio, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    rate = p.daily_rate * (1.1 if config.drift else 1.0)
    counts = rng.poisson(np.repeat(rate[:, None], config.n_days, axis=1))
    customer = np.repeat(np.arange(p.n_customers), counts.sum(axis=1))
    day = np.tile(np.arange(config.n_days), p.n_customers).repeat(counts.ravel())
    n = len(customer)
    seconds = np.clip(rng.normal(13.5 * 3600, 5 * 3600, n), 0, _DAY - 1).astype(np.int64)

    online_share = p.online_share[customer]
    if config.drift:
        online_share = np.minimum(online_share + 0.25, 0.9)
    u = rng.random(n)
    channel_kind = np.where(u < 0.05, 2, np.where(u < 0.05 + online_share, 1, 0))

    pos_idx = np.flatnonzero(p.terminal_kind == 0)
    online_idx = np.flatnonzero(p.terminal_kind == 1)
    atm_idx = np.flatnonzero(p.terminal_kind == 2)
    terminal = np.empty(n, dtype=np.int64)
    m = channel_kind == 0
    terminal[m] = _nearest(
        pos_idx,
        p,
        p.customer_x[customer[m]] + rng.normal(0, 4, m.sum()),
        p.customer_y[customer[m]] + rng.normal(0, 4, m.sum()),
    )
    m = channel_kind == 2
    terminal[m] = _nearest(
        atm_idx,
        p,
        p.customer_x[customer[m]] + rng.normal(0, 2, m.sum()),
        p.customer_y[customer[m]] + rng.normal(0, 2, m.sum()),
    )
    m = channel_kind == 1
    # Customers keep coming back to a handful of favourite online merchants.
    favourite = (customer[m] * 7919 + rng.integers(0, 6, m.sum())) % len(online_idx)
    terminal[m] = online_idx[favourite]

    mean = p.mean_amount[customer] * (1.35 if config.drift else 1.0)
    amount = np.abs(rng.normal(mean, mean / 2))
    amount = np.where(channel_kind == 2, np.maximum(20, np.round(amount / 20) * 20), amount)
    mobile = (channel_kind == 1) & (rng.random(n) < (0.55 if config.drift else 0.35))
    channel = np.where(mobile, 3, channel_kind)  # codes of pos, online, atm, mobile
    ttype = np.where(channel_kind == 2, 1, np.where(mobile & (rng.random(n) < 0.3), 2, 0))
    return {
        "customer": customer,
        "terminal": terminal,
        "seconds": day * _DAY + seconds,
        "amount": amount,
        "channel": channel,
        "ttype": ttype,
        "scenario": np.zeros(n, dtype=np.int8),
    }


def _incidents(rng: np.random.Generator, per_day: float, n_days: int, population: int):
    """Pick ``per_day`` (Poisson) incidents a day: returns (day, victim index)."""
    counts = rng.poisson(per_day, n_days)
    day = np.repeat(np.arange(n_days), counts)
    return day, rng.integers(0, population, len(day))


def _apply_fraud(
    config: GeneratorConfig, p: Portfolio, tx: dict[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    k = config.fraud_intensity
    nd = config.n_days
    customer, terminal, seconds = tx["customer"], tx["terminal"], tx["seconds"]
    day = seconds // _DAY
    scenario = tx["scenario"]

    # 1. Compromised terminals: most transactions at the terminal for the next 28 days.
    cday, cterm = _incidents(rng, k * p.n_terminals / 2_000, nd, p.n_terminals)
    until = np.full(p.n_terminals, -1)
    since = np.full(p.n_terminals, nd + 1)
    np.maximum.at(until, cterm, cday + 28)
    np.minimum.at(since, cterm, cday)
    hit = (day >= since[terminal]) & (day < until[terminal]) & (rng.random(len(day)) < 0.7)
    scenario[hit & (scenario == 0)] = 1

    # 2. Stolen cards: a third of the card's transactions for 14 days are large, far from home.
    sday, scust = _incidents(rng, k * p.n_customers / 1_000, nd, p.n_customers)
    s_until = np.full(p.n_customers, -1)
    s_since = np.full(p.n_customers, nd + 1)
    np.maximum.at(s_until, scust, sday + 14)
    np.minimum.at(s_since, scust, sday)
    hit = (
        (day >= s_since[customer])
        & (day < s_until[customer])
        & (rng.random(len(day)) < 1 / 3)
        & (scenario == 0)
    )
    scenario[hit] = 2
    tx["amount"][hit] *= rng.uniform(3, 8, hit.sum())
    pos_idx = np.flatnonzero(p.terminal_kind == 0)
    tx["terminal"][hit] = rng.choice(pos_idx, hit.sum())
    return tx


def _injected(
    config: GeneratorConfig, p: Portfolio, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """Fraud that adds transactions: account takeover, card testing, mobile-wallet fraud."""
    k = config.fraud_intensity
    nd = config.n_days
    online_idx = np.flatnonzero(p.terminal_kind == 1)
    digital = np.flatnonzero(p.terminal_category == MERCHANT_CATEGORIES.index("digital_goods"))
    electronics = np.flatnonzero(
        (p.terminal_category == MERCHANT_CATEGORIES.index("electronics")) & (p.terminal_kind == 1)
    )
    if len(electronics) == 0:
        electronics = online_idx
    parts = []

    # 3. Account takeover: a few night-time mobile transfers draining the balance.
    day, cust = _incidents(rng, k * p.n_customers / 4_000, nd, p.n_customers)
    reps = rng.integers(1, 4, len(day))
    cust, day = np.repeat(cust, reps), np.repeat(day, reps)
    n = len(cust)
    parts.append(
        {
            "customer": cust,
            "terminal": rng.choice(online_idx, n),
            "seconds": day * _DAY + rng.integers(0, 5 * 3600, n) + rng.integers(0, 2, n) * _DAY,
            "amount": p.balance[cust] * rng.uniform(0.3, 0.9, n),
            "channel": np.full(n, 3),
            "ttype": np.full(n, 2),
            "scenario": np.full(n, 3, dtype=np.int8),
        }
    )

    # 4. Card testing: a burst of tiny online charges, then one large purchase.
    day, cust = _incidents(rng, k * p.n_customers / 3_000, nd, p.n_customers)
    burst = rng.integers(5, 16, len(day))
    start = day * _DAY + rng.integers(0, _DAY - 3600, len(day))
    cust_b = np.repeat(cust, burst + 1)
    group = np.repeat(np.arange(len(day)), burst + 1)
    offsets = rng.integers(0, 1800, len(cust_b))
    offsets = offsets[np.lexsort((offsets, group))]  # ascending within each burst
    last = np.cumsum(burst + 1) - 1
    amount = rng.uniform(0.5, 3.0, len(cust_b))
    amount[last] = rng.uniform(200, 1500, len(last))
    term = rng.choice(digital if len(digital) else online_idx, len(cust_b))
    term[last] = rng.choice(electronics, len(last))
    parts.append(
        {
            "customer": cust_b,
            "terminal": term,
            "seconds": np.repeat(start, burst + 1) + offsets,
            "amount": amount,
            "channel": np.full(len(cust_b), 1),
            "ttype": np.zeros(len(cust_b), dtype=np.int64),
            "scenario": np.full(len(cust_b), 4, dtype=np.int8),
        }
    )

    if config.drift:
        # 5. The new pattern: mid-sized night-time mobile purchases of digital goods.
        day, cust = _incidents(rng, k * p.n_customers / 300, nd, p.n_customers)
        n = len(day)
        parts.append(
            {
                "customer": cust,
                "terminal": rng.choice(digital if len(digital) else online_idx, n),
                "seconds": day * _DAY + rng.integers(0, 6 * 3600, n),
                "amount": rng.uniform(50, 300, n),
                "channel": np.full(n, 3),
                "ttype": np.zeros(n, dtype=np.int64),
                "scenario": np.full(n, 5, dtype=np.int8),
            }
        )
    return parts


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width))


def generate_transactions(config: GeneratorConfig) -> pd.DataFrame:
    """Generate the transactions of one period in the canonical schema.

    Args:
        config: Portfolio size, period, seed and behaviour.

    Returns:
        A frame sorted by timestamp with every canonical column, ``is_fraud``,
        ``label_known_at`` and ``fraud_scenario`` included.
    """
    if config.n_customers < 1 or config.n_terminals < 20 or config.n_days < 1:
        raise ValueError(
            "need at least 1 customer, 20 terminals and 1 day "
            f"(got {config.n_customers}, {config.n_terminals}, {config.n_days})"
        )
    portfolio = generate_portfolio(config)
    rng = _rng("period", config.seed, config.start_date, config.n_days, config.drift)
    tx = _apply_fraud(config, portfolio, _genuine(config, portfolio, rng), rng)
    parts = [tx, *_injected(config, portfolio, rng)]
    cols = {key: np.concatenate([part[key] for part in parts]) for key in tx}
    seconds = np.clip(cols["seconds"], 0, config.n_days * _DAY - 1)
    order = np.argsort(seconds, kind="stable")
    cols = {key: value[order] for key, value in cols.items()}
    seconds = seconds[order]
    n = len(seconds)
    start = pd.Timestamp(config.start_date, tz="UTC")
    timestamp = start + pd.to_timedelta(seconds, unit="s")
    customer, terminal = cols["customer"], cols["terminal"]
    is_fraud = (cols["scenario"] > 0).astype(np.int8)
    delay_days = np.where(
        is_fraud == 1,
        1 + rng.exponential(max(config.label_delay_days - 1, 0.1), n),
        config.genuine_label_days,
    )
    customer_ids = _ids("C", portfolio.n_customers, 6)
    terminal_ids = _ids("T", portfolio.n_terminals, 6)
    balance = portfolio.balance[customer] * rng.lognormal(0, 0.1, n)
    frame = pd.DataFrame(
        {
            "transaction_id": _ids(f"tx-{start:%Y%m%d}{'d' if config.drift else ''}-", n, 8),
            "timestamp": timestamp,
            "customer_id": pd.Categorical.from_codes(customer, customer_ids),
            "terminal_id": pd.Categorical.from_codes(terminal, terminal_ids),
            "amount": np.round(cols["amount"], 2),
            "transaction_type": pd.Categorical.from_codes(
                cols["ttype"], ["purchase", "withdrawal", "transfer"]
            ),
            "channel": pd.Categorical.from_codes(
                cols["channel"], ["pos", "online", "atm", "mobile"]
            ),
            "account_type": pd.Categorical.from_codes(
                portfolio.account_type[customer], list(ACCOUNT_TYPES)
            ),
            "account_balance": np.round(balance, 2),
            "account_age_days": np.floor(portfolio.account_age0[customer] + seconds / _DAY),
            "merchant_category": pd.Categorical.from_codes(
                portfolio.terminal_category[terminal], list(MERCHANT_CATEGORIES)
            ),
            "is_fraud": is_fraud,
            "label_known_at": timestamp + pd.to_timedelta(delay_days * _DAY, unit="s"),
            "fraud_scenario": pd.Categorical.from_codes(cols["scenario"], ["", *SCENARIOS]),
        }
    )
    return frame


def drift_period(config: GeneratorConfig, n_days: int | None = None) -> GeneratorConfig:
    """Config of the period right after ``config``, same portfolio, with drift switched on."""
    start = pd.Timestamp(config.start_date) + pd.Timedelta(days=config.n_days)
    return replace(
        config, start_date=f"{start:%Y-%m-%d}", n_days=n_days or config.n_days, drift=True
    )
