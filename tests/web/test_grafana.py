"""The Grafana dashboard in contrib/grafana/ is valid JSON and every expression names metrics
(and labels) that a real scrape of a filled store exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mailwarden.events import EgressConnect
from mailwarden.report.metrics import registry
from mailwarden.store.db import open_engine
from mailwarden.web.services import Parked

from .conftest import Imported, breaker_engine

DASHBOARD = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "mailwarden.json"

# PromQL words that are not metric names
FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "increase", "rate", "irate",
    "time", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
    "or", "unless", "clamp_min", "clamp_max", "max_over_time", "min_over_time", "abs",
    "label_values", "offset", "delta", "deriv", "changes", "resets", "vector", "scalar",
}  # fmt: skip


@pytest.fixture(scope="module")
def exposed(
    imported_sqlite: Imported, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, set[str]]:
    """Sample name -> label names, from a scrape of a store with every kind of record."""
    import shutil

    d = tmp_path_factory.mktemp("grafana")
    db = d / "store.db"
    shutil.copy(imported_sqlite.url.removeprefix("sqlite:///"), db)
    url = f"sqlite:///{db}"
    eng = breaker_engine(url, d / "view.json")
    eng.open("google", duration=3600, note="grafana test")
    eng.store.engine.dispose()
    engine = open_engine(url)
    from mailwarden.egress.summary import Recorder

    Recorder(engine).record(
        [EgressConnect(ts=1.79e9, source="ebpf", daddr="198.51.100.9", dport=25, uid=33,
                       user="www-data", exe="/usr/bin/php", verdict="blocked")]
    )  # fmt: skip
    text = generate_latest(registry(engine, parked=lambda: {"google": Parked(3, 1)})).decode()
    engine.dispose()
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        out.append((f"variable {v['name']}", q["query"] if isinstance(q, dict) else q))
    return out


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """Metric names and the label names an expression uses (selectors and by/without)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and strings
    e = re.sub(r"\$\w+|\$\{[^}]*\}", "", e)  # Grafana variables
    e = re.sub(r"\[[^\]]*\]", "", e)  # range durations
    labels: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", e):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body))
    e = re.sub(r"\{[^}]*\}", "", e)
    for grp in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", e):
        labels |= {x.strip() for x in grp.split(",") if x.strip()}
    e = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", e)
    m = re.match(r"\s*label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)\s*$", e)
    if m:
        return {m[1]}, {m[2]}
    idents = set(re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)", e))
    return {i for i in idents if i not in FUNCTIONS}, labels


def test_dashboard_is_valid_and_complete() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["targets"], p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]


def test_every_expression_names_exposed_metrics(exposed: dict[str, set[str]]) -> None:
    dash = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for title, expr in expressions(dash):
        names, labels = names_and_labels(expr)
        assert names, (title, expr)
        for n in names:
            assert n in exposed, f"{title}: {n} is not exposed by /metrics"
        have = set().union(*(exposed[n] for n in names))
        for lab in labels:
            assert lab in have, f"{title}: label {lab!r} not on {sorted(names)}"
        used |= names
    # the dashboard covers what the brief asks for
    for family in (
        "mailwarden_deliveries_total",
        "mailwarden_rejections_total",
        "mailwarden_breaker_state",
        "mailwarden_breaker_transitions_total",
        "mailwarden_parked_recipients",
        "mailwarden_egress_connections_total",
        "mailwarden_log_lag_seconds",
        "mailwarden_log_lines_total",
    ):
        assert family in used, family


def test_the_checker_catches_a_wrong_name(exposed: dict[str, set[str]]) -> None:
    names, labels = names_and_labels(
        'sum by (povider) (increase(mailwarden_delivery_total{a="b"}[1h]))'
    )
    assert names == {"mailwarden_delivery_total"} and "mailwarden_delivery_total" not in exposed
    assert labels == {"a", "povider"}
