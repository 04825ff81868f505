"""docs/configuration.md names every setting of `Settings`, and nothing that is not one."""

from __future__ import annotations

import re
from pathlib import Path

from banking_es.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def documented_variables() -> set[str]:
    """The variables in the first column of the page's tables."""
    names: set[str] = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_every_setting_is_documented_and_every_documented_variable_is_a_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    documented = documented_variables()
    assert sorted(settings - documented) == [], "settings missing from docs/configuration.md"
    assert sorted(documented - settings) == [], "docs/configuration.md names unknown settings"
