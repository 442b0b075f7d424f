"""Shared helpers of the CLI tests: invoke ``fsparse`` in-process and check how it ended."""

from __future__ import annotations

from click.testing import CliRunner, Result

from fsparse.cli import cli


def run(*args: object) -> Result:
    """``fsparse ARGS...`` through click's runner (stdout and stderr kept apart)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args: object) -> Result:
    """:func:`run`, asserting exit code 0."""
    result = run(*args)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def fails(result: Result, code: int, *fragments: str) -> str:
    """Assert exit ``code`` with a one-line message holding every fragment; return it."""
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "internal error" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message
