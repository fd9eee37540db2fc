"""`fraudops data ...`: generate and validate transaction files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fraudops.errors import friendly_errors

app = typer.Typer(
    help="Generate synthetic transactions and validate transaction files.",
    no_args_is_help=True,
)
console = Console()

MappingOpt = Annotated[
    str | None,
    typer.Option(
        "--mapping",
        help="Column mapping: a YAML file, or a built-in name ('creditcard' for the public "
        "Time,V1..V28,Amount,Class layout). See docs/data.md.",
    ),
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="Map one column, canonical=source (repeatable), e.g. --map amount=AMT. "
        "Applied on top of --mapping.",
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="csv or parquet; default: from the file extension."),
]


@app.command("generate")
@friendly_errors
def generate(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output file (.parquet or .csv).")
    ] = Path("transactions.parquet"),
    transactions: Annotated[
        int | None,
        typer.Option(
            help="About this many transactions: sizes the portfolio (overrides --customers)."
        ),
    ] = None,
    customers: Annotated[int, typer.Option(help="Card holders in the portfolio.")] = 2_000,
    terminals: Annotated[
        int | None, typer.Option(help="Terminals/merchants (default: twice the customers).")
    ] = None,
    days: Annotated[int, typer.Option(help="Days of transactions.")] = 60,
    start_date: Annotated[str, typer.Option(help="First day, YYYY-MM-DD (UTC).")] = "2026-04-01",
    seed: Annotated[int, typer.Option(help="Same seed, same portfolio and data.")] = 7,
    drift: Annotated[
        bool,
        typer.Option(
            "--drift",
            help="Changed behaviour for this period: amounts up ~35%, more mobile/online "
            "traffic, and a new fraud pattern (mobile_wallet_fraud). Use a later --start-date.",
        ),
    ] = False,
    fraud_intensity: Annotated[float, typer.Option(help="Multiplier on fraud incidents.")] = 1.0,
) -> None:
    """Generate a synthetic card portfolio's transactions with labelled fraud.

    Scenarios: compromised terminals, stolen cards (large amounts far from home), account
    takeover (night-time mobile transfers), card-testing bursts; with --drift also
    mobile_wallet_fraud. Labels carry the time they became known (label_known_at).
    """
    from components.frames import write_table
    from components.generator import GeneratorConfig, generate_transactions

    if transactions is not None:
        config = GeneratorConfig.for_transactions(
            transactions,
            n_days=days,
            start_date=start_date,
            seed=seed,
            drift=drift,
            fraud_intensity=fraud_intensity,
        )
    else:
        config = GeneratorConfig(
            n_customers=customers,
            n_terminals=terminals or 2 * customers,
            n_days=days,
            start_date=start_date,
            seed=seed,
            drift=drift,
            fraud_intensity=fraud_intensity,
        )
    with console.status("generating transactions"):
        frame = generate_transactions(config)
        write_table(frame, out)
    console.print(
        f"wrote {len(frame):,} transactions ({int(frame['is_fraud'].sum()):,} fraud, "
        f"{frame['is_fraud'].mean():.2%}) for {config.n_customers:,} customers, "
        f"{config.n_terminals:,} terminals, {config.n_days} days from {config.start_date}"
        f"{' with drift' if drift else ''} to {out}"
    )


@app.command("validate")
@friendly_errors
def validate(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file of transactions.")],
    mapping: MappingOpt = None,
    map_: MapOpt = None,
    file_format: FormatOpt = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where accepted.parquet, quarantine.csv and report.json go "
            "(default: $FRAUDOPS_HOME/validation/<file name>)."
        ),
    ] = None,
    max_rejected_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Fail when a larger share of rows is quarantined."),
    ] = 0.05,
    require_label: Annotated[
        bool, typer.Option("--require-label", help="Every row must have is_fraud (training data).")
    ] = False,
) -> None:
    """Check a transaction file; quarantine bad rows with their reasons.

    Checks types, required fields, ranges (no negative amounts, no timestamps in the future),
    allowed values and duplicate ids. Every row is either accepted or quarantined with the
    reason; report.json counts rows_in = accepted + quarantined. Exits 2 when the quarantined
    share exceeds --max-rejected-share or the file is not what it claims to be.
    """
    from components.frames import default_home, write_table
    from components.loaders import load_transactions
    from components.mapping import load_mapping, parse_map_options
    from components.validation import (
        ValidationConfig,
        check_rejected_share,
        validate_transactions,
    )

    column_mapping = load_mapping(mapping).merged(parse_map_options(map_))
    with console.status(f"reading {path}"):
        loaded = load_transactions(path, column_mapping, file_format, require_label=require_label)
    for note in loaded.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    with console.status(f"validating {len(loaded.frame):,} rows"):
        result = validate_transactions(
            loaded.frame,
            ValidationConfig(max_rejected_share=max_rejected_share, require_label=require_label),
            extra_numeric=loaded.extra_columns,
        )
    out_dir = out_dir or default_home() / "validation" / path.name.split(".")[0]
    report = {
        "source": str(path),
        "format": loaded.file_format,
        "mapping": column_mapping.name,
        "notes": loaded.notes,
        **result.report,
        "outputs": {
            "accepted": str(out_dir / "accepted.parquet"),
            "quarantine": str(out_dir / "quarantine.csv"),
            "report": str(out_dir / "report.json"),
        },
    }
    write_table(result.accepted, out_dir / "accepted.parquet")
    write_table(result.quarantined, out_dir / "quarantine.csv")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_report(report)
    check_rejected_share(result, str(path))


def _print_report(report: dict) -> None:
    table = Table(title=f"validation of {report['source']}", show_header=False)
    table.add_row("rows in", f"{report['rows_in']:,}")
    table.add_row("accepted", f"{report['accepted']:,}")
    table.add_row("quarantined", f"{report['quarantined']:,} ({report['rejected_share']:.3%})")
    for reason, count in list(report["reasons"].items())[:10]:
        table.add_row(f"  {reason}", f"{count:,}")
    console.print(table)
    console.print(f"accepted rows: {report['outputs']['accepted']}")
    console.print(f"quarantined rows with reasons: {report['outputs']['quarantine']}")
    console.print(f"report: {report['outputs']['report']}")
