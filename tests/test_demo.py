"""The README's main command, end to end at the smallest scale."""

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from fraudops.cli import app


def test_demo_runs_the_loop_at_tiny_scale(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["demo", "--scale", "tiny", "--home", str(home)])
    assert result.exit_code == 0, result.output
    history = pd.read_parquet(home / "data" / "history.parquet")
    drifted = pd.read_parquet(home / "data" / "drifted.parquet")
    assert 15_000 < len(history) < 25_000
    assert drifted["timestamp"].min() > history["timestamp"].max()
    assert "v1 registered" in result.output
    assert "fraudops demo" in result.output  # the summary table
    card = next(home.glob("bundles/fraud-detector/v1/model_card.md"))
    assert "## Metrics on the test window" in Path(card).read_text()


def test_demo_rejects_an_unknown_scale(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--scale", "huge", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "choose one of tiny, small, medium, large" in result.output
