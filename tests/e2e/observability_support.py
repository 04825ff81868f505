"""A parser for /metrics, and the metric names deploy/ and the docs use (observability tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (sample name, labels)."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


# ---- the metric names deploy/ and the docs use ------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bbanking_es_[a-z0-9_]*[a-z0-9]")
SUFFIXES = ("_total", "_bucket", "_sum", "_count")
#: Named in deploy/ but exported by work that has not landed yet: name -> why.
NOT_YET_EXPORTED: dict[str, str] = {}


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    found: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend(target["expr"] for target in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def named(texts: list[str]) -> set[str]:
    return {name for text in texts for name in NAME.findall(text)}


def missing(names: set[str], exposition: str) -> set[str]:
    """The names that are neither a family nor a family plus one of SUFFIXES."""
    families = {family.name for family in text_string_to_metric_families(exposition)}

    def exported(name: str) -> bool:
        if name in families:
            return True
        return any(name.endswith(s) and name.removesuffix(s) in families for s in SUFFIXES)

    return {name for name in names if not exported(name)}
