"""What the deployment files say: the Dockerfile's final stage, compose's service, the CLI.

Shared by the tests of deploy/k8s, docker-compose.yml, the Dockerfile and the lock files.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import typer.main
from typer import Context
from typer.core import TyperGroup

from banking_es.cli import app as cli_app
from banking_es.config import Settings

ROOT = Path(__file__).resolve().parents[2]

#: Every variable `Settings` reads (it ignores others: a misspelt one is silently unused).
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)


def dockerfile_final_stage(path: Path = ROOT / "Dockerfile") -> dict[str, Any]:
    """The last stage's USER, ENV, CMD, ENTRYPOINT and HEALTHCHECK (continuations joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("#")]
    start = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    stage: dict[str, Any] = {"ENV": {}}
    for line in lines[start:]:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                stage["ENV"][name] = value
        elif word in ("CMD", "ENTRYPOINT"):
            stage[word] = json.loads(rest)  # exec form only: a shell would not get SIGTERM
        else:
            stage[word] = rest.strip()
    return stage


def parse_cli(argv: list[str]) -> list[str]:
    """Parse `banking-es ARGS` as the real CLI would, without running it; return the command
    path (e.g. ["users", "create-admin"]). Raises ValueError for a missing or unknown command,
    click's UsageError for a bad option."""
    assert argv[0] == "banking-es", argv
    command: Any = typer.main.get_command(cli_app)
    context = Context(command, info_name="banking-es")
    args, path = argv[1:], []
    while isinstance(command, TyperGroup):
        if not args:
            raise ValueError(f"{' '.join(argv)}: no command given")
        name, *args = args
        sub = command.get_command(context, name)
        if sub is None:
            raise ValueError(f"{' '.join(argv)}: no command {name!r}")
        path.append(name)
        command = sub
        context = Context(command, info_name=name, parent=context)
    command.make_context(path[-1], list(args), parent=context.parent)
    return path
