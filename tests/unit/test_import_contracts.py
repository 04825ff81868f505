"""The contract modules' contract (pyproject.toml) names every other module of their packages."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_contract_modules_are_kept_from_every_other_module_of_their_packages() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [contract] = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "contracts"]
    sources, forbidden = set(contract["source_modules"]), set(contract["forbidden_modules"])
    for package in ("application", "eventstore"):
        modules = {
            f"banking_es.{package}.{path.stem}"
            for path in (ROOT / "src" / "banking_es" / package).glob("*.py")
            if path.stem != "__init__"
        }
        assert modules - sources - forbidden == set(), "add them to the `contracts` contract"
