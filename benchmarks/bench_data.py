"""Data: generating and validating 1M synthetic transactions."""

from benchmarks.harness import Figure, timed
from components.generator import GeneratorConfig, generate_transactions
from components.validation import ValidationConfig, validate_transactions

N = 1_000_000


def run() -> list[Figure]:
    config = GeneratorConfig.for_transactions(N, n_days=90)
    seconds, frame = timed(lambda: generate_transactions(config), repeats=3)
    figures = [
        Figure(
            "generate 1M transactions",
            seconds,
            "s",
            "<= 20 s",
            seconds <= 20,
            f"{len(frame):,} rows, {config.n_customers:,} customers, best of 3",
        )
    ]
    seconds, result = timed(
        lambda: validate_transactions(frame, ValidationConfig(require_label=True)), repeats=2
    )
    figures.append(
        Figure(
            "validate 1M transactions",
            seconds,
            "s",
            "",
            None,
            f"{result.report['rows_in']:,} rows, typed input, best of 2",
        )
    )
    return figures
