import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from fraudops.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_every_command_has_help():
    for command in (
        [],
        ["data"],
        ["data", "generate"],
        ["data", "validate"],
        ["demo"],
    ):
        result = run(*command, "--help")
        assert result.exit_code == 0, (command, result.output)
        assert "Usage: fraudops" in result.output


def test_generate_then_validate(tmp_path):
    data = tmp_path / "tx.parquet"
    result = run("data", "generate", "--customers", "100", "--days", "10", "--out", str(data))
    assert result.exit_code == 0, result.output
    rows = len(pd.read_parquet(data))
    assert f"wrote {rows:,} transactions" in result.output

    out = tmp_path / "checked"
    result = run("data", "validate", str(data), "--require-label", "--out-dir", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["rows_in"] == rows == report["accepted"]
    assert report["quarantined"] == 0
    assert len(pd.read_parquet(out / "accepted.parquet")) == rows


def test_validate_planted_csv_quarantines_and_fails_over_the_limit(tmp_path, small_frame):
    frame = small_frame.head(100).copy()
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[[1, 2, 3], "amount"] = -1
    path = tmp_path / "planted.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "v"
    ok = run("data", "validate", str(path), "--out-dir", str(out))
    assert ok.exit_code == 0, ok.output
    quarantine = pd.read_csv(out / "quarantine.csv")
    assert quarantine["source_row"].tolist() == [2, 3, 4]
    assert quarantine["reasons"].str.contains("negative amount").all()

    strict = run(
        "data", "validate", str(path), "--out-dir", str(out), "--max-rejected-share", "0.01"
    )
    assert strict.exit_code == 2
    assert "3 of 100 rows" in strict.output and "--max-rejected-share" in strict.output
    # the outputs are still written, so the engineer can look at what was rejected
    assert json.loads((out / "report.json").read_text())["quarantined"] == 3


def test_validate_creditcard_layout_with_its_mapping(tmp_path, creditcard_csv):
    creditcard_csv(tmp_path / "creditcard.csv", n=300)
    out = tmp_path / "cc"
    missing = run("data", "validate", str(tmp_path / "creditcard.csv"), "--out-dir", str(out))
    assert missing.exit_code == 2
    assert "--mapping creditcard" in missing.output

    result = run(
        "data",
        "validate",
        str(tmp_path / "creditcard.csv"),
        "--mapping",
        "creditcard",
        "--require-label",
        "--out-dir",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "no customer or terminal ids" in result.output
    accepted = pd.read_parquet(out / "accepted.parquet")
    assert len(accepted) == 300
    assert {"V1", "V28"} <= set(accepted.columns)


def test_wrong_format_is_a_clear_error_not_a_traceback(tmp_path):
    fake = tmp_path / "fake.parquet"
    fake.write_text("transaction_id,amount\n1,2\n")
    result = run("data", "validate", str(fake))
    assert result.exit_code == 2
    assert "error:" in result.output and "--format csv" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"]])
def test_console_script_runs_as_a_process(args):
    result = subprocess.run(
        [sys.executable, "-m", "fraudops", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "generate" in result.stdout or "data" in result.stdout
