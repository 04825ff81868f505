"""The table `make bench` prints (Markdown, so the README can show it as is)."""

from __future__ import annotations

from typing import Any

from bench.common import conflicts_per_thousand


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _ratios(rate: float, http: dict[str, Any]) -> tuple[float, str]:
    """The ratio to row 0 (the bare ASGI app), and both ratios as the table shows them."""
    bare = http["bare"]["rate"] if "bare" in http else 0.0
    of_bare = rate / bare if bare else 0.0
    return of_bare, f"{of_bare:.1%} of row 0; {rate / http['health']['rate']:.1%} of row 1"


def _http_rows(http: dict[str, Any]) -> list[str]:
    lines = []
    if "bare" in http:
        b = http["bare"]
        lines.append(
            f"| 0 | bare ASGI app, uvicorn + uvloop + httptools, same workers | {b['rate']:,.0f}"
            " req/s | - | - | the ceiling | - |"
        )
    h = http["health"]
    ratio, both = _ratios(h["rate"], http)
    lines.append(
        f"| 1 | `GET /health/live`, whole stack | {h['rate']:,.0f} req/s | row 0 | {both}"
        f" | >= 50% of row 0 | {_met(ratio >= 0.5)} |"
    )
    d = http["deposits"]
    ratio, both = _ratios(d["rate"], http)
    lines.append(
        f"| 2 | deposits, 64 conns, 1,000 accounts | {d['rate']:,.0f}/s"
        f" (p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms) | row 0 | {both}"
        f" | >= 25% of row 0, p99 < 50 ms | {_met(ratio >= 0.25 and d['p99_ms'] < 50)} |"
    )
    c = http["contention"]
    _, both = _ratios(c["rate"], http)
    bad = c["non_2xx"] + c["socket_errors"]
    lines.append(
        f"| 3 | deposits, 64 conns, ONE account | {c['rate']:,.0f}/s"
        f" ({c['non_2xx']} non-2xx, p99 {c['p99_ms']:.1f} ms) | row 0 | {both}"
        f" | >= 1,500/s, 0 non-2xx | {_met(c['rate'] >= 1500 and bad == 0)} |"
    )
    m = http["mixed"]
    ratio, both = _ratios(m["rate"], http)
    lines.append(
        f"| 4 | mixed 70% GET / 20% deposit / 10% withdraw | {m['rate']:,.0f}/s"
        f" (p99 {m['p99_ms']:.1f} ms) | row 0 | {both} | >= 35% of row 0 | {_met(ratio >= 0.35)} |"
    )
    t = http.get("transfers")
    if t:
        ratio, both = _ratios(t["rate"], http)
        lines.append(
            f"| transfers | transfers, 64 conns, 1,000 accounts, random pairs | {t['rate']:,.0f}/s"
            f" (p99 {t['p99_ms']:.1f} ms, {t['non_2xx']} non-2xx) | row 0 | {both}"
            f" | >= 15% of row 0 | {_met(ratio >= 0.15)} |"
        )
    h = http.get("holds")
    if h and t:
        pairs = h["rate"] / 2  # two requests a pair (bench/http.py)
        vs_transfers = pairs / t["rate"] if t["rate"] else 0.0
        lines.append(
            f"| holds | hold + capture pairs, 64 conns, 1,000 accounts | {pairs:,.0f} pairs/s"
            f" (p99 {h['p99_ms']:.1f} ms, {h['non_2xx']} non-2xx) | transfers"
            f" | {vs_transfers:.0%} | >= 50% of transfers | {_met(vs_transfers >= 0.5)} |"
        )
    return lines


def _instances_rows(i: dict[str, Any], http: dict[str, Any] | None) -> list[str]:
    """Row 8: two instances, beside rows 2 and 3 of the same run when they ran."""
    lines = []
    for number, key, what, reference in (
        ("8", "deposits", "1,000 accounts", "deposits"),
        ("8 hot", "contention", "ONE account", "contention"),
    ):
        row = i[key]
        per = conflicts_per_thousand(row["counted"])
        split = " + ".join(f"{k} {v:,.0f}/s" for k, v in row.get("per_instance", {}).items())
        ok = per < 1 and row["non_2xx"] + row["socket_errors"] == 0
        target = "< 1 conflict per 1,000 commands, 0 non-2xx"
        if reference == "contention":
            target += ", >= row 3"
        ref = http[reference]["rate"] if http else 0.0
        if ref:
            label = "row 2" if reference == "deposits" else "row 3"
            cells = f"{label} {ref:,.0f}/s | {row['rate'] / ref:.0%} of {label}"
            if reference == "contention":
                ok = ok and row["rate"] >= ref
            met = _met(ok)
        else:  # rows 2-3 not in this run: the rate cannot be judged, a miss still can
            cells = "rows 2-3 not run | -"
            met = _met(ok) if reference == "deposits" or not ok else "-"
        lines.append(
            f"| {number} | two instances (1 worker each), deposits, 32 + 32 conns, {what}"
            f" | {row['rate']:,.0f}/s ({split}; {per:.2f} conflicts per 1,000 commands,"
            f" {row['non_2xx']} non-2xx, p99 {row['p99_ms']:.1f} ms) | {cells} | {target}"
            f" | {met} |"
        )
    return lines


def table(r: dict[str, Any]) -> str:
    lines = [
        "| # | measurement | result | reference, same run | ratio | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    http = r.get("http")
    if http:
        lines += _http_rows(http)
    i = r.get("instances")
    if i:
        lines += _instances_rows(i, http)
    a = r.get("appends")
    if a:
        vs_copy = a["store_rate"] / a["copy_rate"]
        vs_es = a["store_rate"] / a["eventsourcing_rate"]
        lines.append(
            f"| 5 | event-store appends in process (+ outbox rows) | {a['store_rate']:,.0f}/s"
            f" | COPY {a['copy_rate']:,.0f}/s; eventsourcing {a['eventsourcing_rate']:,.0f}/s"
            f" | {vs_copy:.1%} of COPY; {vs_es:.1f}x | >= 60%, >= 5x"
            f" | {_met(vs_copy >= 0.6 and vs_es >= 5)} |"
        )
    ld = r.get("load")
    if ld:
        lines.append(
            f"| 6 | cold load, 100,000 events (snapshots) | {ld['big_ms']:.2f} ms"
            f" | 10 events: {ld['small_ms']:.2f} ms | {ld['ratio']:.2f}x | < 2x"
            f" | {_met(ld['ratio'] < 2)} |"
        )
    rb = r.get("rebuild")
    if rb:
        each = ", ".join(f"{k} {v:,.0f}" for k, v in rb["per_projection"].items())
        lines.append(
            f"| 7 | projection rebuild, 1,000,000 events | {rb['rate']:,.0f} events/s"
            f" (slowest; {each}) | - | - | >= 30,000/s | {_met(rb['rate'] >= 30000)} |"
        )
    if http:
        mib = http["peak_rss_bytes"] / 2**20
        lines.append(
            f"\nServer peak memory: {mib:,.0f} MiB (sum RSS of {http['workers_sampled']} workers,"
            f" sampled every 0.25 s). Authentication: "
            + ("bearer token." if http["authenticated"] else "open (no identity on this build).")
        )
        check = http["check"]
        lines.append(
            f"Row 3 check: the hot account is at version {check['hot_account_version']:,}"
            f" after {check['acknowledged_deposits']:,} acknowledged deposits"
            f" (no lost write: {check['no_lost_write']})."
        )
    if http and "worker_cpu_us" in http["health"]:
        rows = [("1", "health"), ("2", "deposits"), ("3", "contention"), ("4", "mixed")]
        rows += [(k, k) for k in ("transfers", "holds") if k in http]
        lines.append(
            "CPU time per request (workers / all PostgreSQL processes): "
            + "; ".join(
                f"row {n} {http[k]['worker_cpu_us']:,.0f} / {http[k]['postgres_cpu_us']:,.0f} us"
                for n, k in rows
            )
            + "."
        )
    if i:
        check = i["check"]
        shards = ", ".join(f"{name} {count}" for name, count in i["shards"].items())
        cpu = "; ".join(
            f"{what} {i[k].get('worker_cpu_us', 0):,.0f} / {i[k].get('postgres_cpu_us', 0):,.0f} us"
            for what, k in (("1,000 accounts", "deposits"), ("one account", "contention"))
        )
        lines.append(
            f"Row 8: shards {shards}; the hot account's owner {i['hot_owner']} (the other"
            f" forwards its half); the hot account is at version {check['hot_account_version']:,}"
            f" after {check['acknowledged_deposits']:,} acknowledged deposits (no lost write:"
            f" {check['no_lost_write']}). CPU per request (both instances / PostgreSQL): {cpu}."
        )
    m = r["machine"]
    lines.append(
        f"Load average before/after: {m['load_before']} / {m.get('load_after', '?')}"
        f" ({m['cpus']} CPUs); the bench took {r.get('seconds', 0):.0f} s."
    )
    return "\n".join(lines)
