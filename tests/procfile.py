"""The Procfile's processes as ./scripts/run starts them: tests and benchmarks start and
inspect the very same commands."""

from __future__ import annotations

from pathlib import Path

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def procfile_command(name: str, **variables: str) -> str:
    """The command of the Procfile's process `name`, its `$VARIABLES` filled from
    `variables` (the others left to the shell)."""
    lines = PROCFILE.read_text().splitlines()
    command = next(line for line in lines if line.startswith(f"{name}:")).split(": ", 1)[1]
    for variable, value in variables.items():
        command = command.replace(f"${variable}", value)
    return command
