"""The README's Python quick starts run as written and print what the README shows.

A ``print(...)`` line whose trailing comment is a Python literal (``# 0.8``,
``# {'table': 0.8}``) shows its output: the test checks that the line printed
exactly that text. Other comments (``# the recipe, as YAML-able data``) are prose.
"""

from __future__ import annotations

import ast
import builtins
import io
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
_PRINT = re.compile(r"^\s*print\(.*\)\s*#\s*(?P<shown>.+?)\s*$")


def shown_outputs(code: str) -> dict[int, str]:
    """Line number (1-based) -> the output a ``print(...)  # literal`` line shows."""
    shown = {}
    for number, line in enumerate(code.splitlines(), start=1):
        match = _PRINT.match(line)
        if match is None:
            continue
        try:
            ast.literal_eval(match["shown"])
        except (ValueError, SyntaxError):
            continue  # a prose comment, not an output
        shown[number] = match["shown"]
    return shown


def run_block(code: str) -> dict[int, list[str]]:
    """Run ``code``; what each of its lines printed (line number -> outputs)."""
    printed: dict[int, list[str]] = defaultdict(list)

    def recording_print(*args: Any, **kwargs: Any) -> None:
        caller = sys._getframe(1)
        if caller.f_code.co_filename == "README.md" and "file" not in kwargs:
            buffer = io.StringIO()
            builtins.print(*args, **kwargs, file=buffer)
            printed[caller.f_lineno].append(buffer.getvalue().rstrip("\n"))
        builtins.print(*args, **kwargs)

    namespace = {"__name__": "__readme__", "print": recording_print}
    exec(compile(code, "README.md", "exec"), namespace)
    return printed


def test_readme_opens_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, flags=re.DOTALL)
    assert first_block is not None
    assert first_block.group(1).split("\n")[:2] == ["make demo", "make test"]


def test_readme_says_how_to_run_the_cli_and_the_snippets() -> None:
    assert ". .venv/bin/activate" in README
    assert ".venv/bin/python" in README and ".venv/bin/fsparse" in README
    cli_block = README[README.index("## Quick start: the command line") :]
    commands = re.search(r"```sh\n(.*?)```", cli_block, flags=re.DOTALL)
    assert commands is not None
    lines = commands.group(1).splitlines()
    first_fsparse = next(i for i, line in enumerate(lines) if line.startswith("fsparse"))
    assert any(line.startswith(". .venv/bin/activate") for line in lines[:first_fsparse])


def test_readme_shows_outputs_to_check() -> None:
    # the quick starts that print a number show it; guard against the convention rotting
    assert sum(len(shown_outputs(code)) for code in BLOCKS) >= 3


def test_shown_outputs_parser() -> None:
    code = "x = 1\nprint(x)   # 1\nprint(x)  # prose, not output\nprint({'a': 0.5})  # {'a': 0.5}\n"
    assert shown_outputs(code) == {2: "1", 4: "{'a': 0.5}"}
    assert run_block(code) == {2: ["1"], 3: ["1"], 4: ["{'a': 0.5}"]}


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs_and_prints_what_it_shows(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    printed = run_block(code)
    for line, shown in shown_outputs(code).items():
        assert printed.get(line) == [shown], (code.splitlines()[line - 1], printed.get(line))
