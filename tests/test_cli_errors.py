"""Errors a user can fix: one `error:` line, exit status 2, no traceback, in every command."""

import typer
from typer.testing import CliRunner

from components.cli_errors import friendly_errors
from fraudops.cli import app


def test_store_error_in_a_monitoring_job_is_one_line_with_status_2(tmp_path):
    result = CliRunner().invoke(
        app, ["drift", "check", "--store", str(tmp_path / "empty"), "--out-dir", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert "fraud-detector" in result.output  # names what is missing


def test_the_message_is_printed_as_is_and_the_prefix_is_styled(capsys):
    @friendly_errors
    def command() -> None:
        raise FileNotFoundError("no file [data/x.csv]; see [/prefix] docs")

    cli = typer.Typer()
    cli.command()(command)
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 2
    assert "error: no file [data/x.csv]; see [/prefix] docs" in result.output
    assert "[bold red]" not in result.output


def test_other_errors_keep_their_traceback():
    @friendly_errors
    def command() -> None:
        raise ZeroDivisionError("a bug")

    cli = typer.Typer()
    cli.command()(command)
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 1
    assert isinstance(result.exception, ZeroDivisionError)
