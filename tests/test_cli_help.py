"""`--help` reads as a shell user expects: no value type beside flags, no Python list types."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from batchcast.tools.cli import app


def _commands(group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*path, name))
        if hasattr(command, "commands"):  # a group (typer bundles its own click)
            found += _commands(command, (*path, name))
    return found


def test_no_help_page_shows_bool_or_python_list_types() -> None:
    commands = _commands(typer.main.get_command(app))
    assert ("deadletters", "discard") in commands and ("rerun",) in commands
    for command in commands:
        shown = CliRunner().invoke(app, [*command, "--help"], terminal_width=200).output
        assert "Usage:" in shown, (command, shown)
        assert "<bool>" not in shown and "list[" not in shown, (
            f"batchcast {' '.join(command)} --help:\n{shown}"
        )
