#!/usr/bin/env python3
"""Checks of stockd's metrics, used by .ci/prometheus-check.sh (standard library only).

  check.py wait-target --prom URL [--timeout S]
      Polls Prometheus's /api/v1/targets until every active target is "up".
  check.py exposition FILE
      Static checks of one /metrics scrape: every stockd metric has HELP and TYPE, the
      stockd_ prefix and a unit suffix; latencies are histograms with the 25 us .. 1 s
      buckets; only bounded labels are used (never a product, location, hold or order);
      every metric family the issue asks for is exported, and every reserve outcome and
      hold lifecycle event appears on every channel.
  check.py queries --prom URL --dashboard FILE [--timeout S]
      Queries through Prometheus's HTTP API: the Reserve p99 and per-channel outcome
      rates must be non-empty and finite; then every panel target expression of the
      Grafana dashboard is evaluated (instant and range query) and must not error, and
      must be non-empty unless it only uses metrics allowed to be empty in a short run.
Every subcommand prints what it checked and exits non-zero on failure.
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CHANNELS = ("SOCIAL", "WEB")
OUTCOMES = ("reserved", "partial", "rejected")
EVENTS = ("created", "updated", "confirmed", "released", "expired")

# The kinds of shard message `stockd_shard_messages_total{kind}` counts (a fixed list in
# crates/stockd/src/shard/handle.rs).
MESSAGE_KINDS = {
    "reserve", "undo", "hold", "confirm", "release", "fulfil", "fulfil_check", "cancel",
    "read", "stock", "config", "expire", "position", "channels", "reacquire",
}

# Label names a stockd metric may carry: all bounded (channels are configured; shards and
# logs are counted at start).
ALLOWED_LABELS = {"service", "method", "code", "channel", "outcome", "event", "shard", "log", "kind", "le"}

# family -> (type, labels it must carry besides le)
REQUIRED_FAMILIES = {
    "stockd_rpc_duration_seconds": ("histogram", {"service", "method", "code"}),
    "stockd_reserve_outcomes_total": ("counter", {"channel", "outcome"}),
    "stockd_active_holds": ("gauge", {"channel"}),
    "stockd_hold_events_total": ("counter", {"channel", "event"}),
    "stockd_stockouts_total": ("counter", {"channel"}),
    "stockd_positions": ("gauge", set()),
    "stockd_shard_mailbox_depth": ("gauge", {"shard"}),
    "stockd_shard_batch_size": ("histogram", {"shard"}),
    "stockd_wal_flush_duration_seconds": ("histogram", set()),
    "stockd_wal_changes_per_flush": ("histogram", set()),
    "stockd_wal_written_bytes_total": ("counter", set()),
    "stockd_snapshot_duration_seconds": ("histogram", set()),
    "stockd_recovery_duration_seconds": ("gauge", set()),
    "stockd_wal_fsync_duration_seconds": ("histogram", set()),
    "stockd_wal_segments": ("gauge", {"log"}),
    "stockd_shard_messages_total": ("counter", {"kind"}),
}

# Dashboard expressions that may be empty after a short run, by the metrics they use.
MAY_BE_EMPTY = {
    "stockd_snapshot_duration_seconds",  # only once a shard has taken a snapshot
    "stockd_shard_overloaded_total",  # only when a mailbox was full
}

# Grafana's built-in variables, as a dashboard would see them over a short range.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "5m",
    "__interval_ms": "60000",
    "__range_s": "300",
    "__range_ms": "300000",
}


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


# ----------------------------------------------------------------- Prometheus


def api(prom, path, params=None):
    """GET prom+path; returns the decoded JSON body, also for HTTP 4xx/5xx errors."""
    url = prom.rstrip("/") + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {"status": "error", "errorType": f"http {e.code}", "error": body[:300]}
        doc.setdefault("status", "error")
        doc.setdefault("error", f"HTTP {e.code}")
        doc["httpStatus"] = e.code
        return doc


def query(prom, expr):
    return api(prom, "/api/v1/query", {"query": expr})


def query_range(prom, expr, seconds=120, step=5):
    end = time.time()
    return api(
        prom, "/api/v1/query_range", {"query": expr, "start": end - seconds, "end": end, "step": step}
    )


def values(doc):
    """(labels, value) pairs of an instant query result; NaN kept as float nan."""
    data = doc.get("data", {})
    kind = data.get("resultType")
    result = data.get("result", [])
    if kind == "vector":
        return [(r.get("metric", {}), float(r["value"][1])) for r in result]
    if kind == "scalar":
        return [({}, float(result[1]))]
    if kind == "matrix":
        return [(r.get("metric", {}), float(r["values"][-1][1])) for r in result if r.get("values")]
    return []


def fmt_labels(m):
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(m.items())) + "}"


def cmd_wait_target(args):
    deadline = time.monotonic() + args.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            doc = api(args.prom, "/api/v1/targets")
            active = doc.get("data", {}).get("activeTargets", [])
            if active and all(t.get("health") == "up" for t in active):
                for t in active:
                    print(
                        f"target {t.get('scrapeUrl')}: up (last scrape {t.get('lastScrape')}, "
                        f"{t.get('lastScrapeDuration', 0):.4f} s)"
                    )
                return
            last = "; ".join(
                f"{t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError', '')}".strip() for t in active
            ) or "no active target yet"
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = f"Prometheus not answering: {e}"
        time.sleep(0.5)
    fail(f"Prometheus did not scrape stockd within {args.timeout:.0f} s: {last}")


# ------------------------------------------------------------------ exposition

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_labels(text):
    labels, pos = {}, 0
    text = text or ""
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        if not m:
            raise ValueError(f"cannot parse labels {text!r}")
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in ("histogram", "summary"):
            return name[: -len(suffix)]
    return name


def cmd_exposition(args):
    text = open(args.file, encoding="utf-8").read()
    helps, types, samples = {}, {}, []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("# HELP "):
            parts = line[7:].split(" ", 1)
            helps[parts[0]] = parts[1] if len(parts) > 1 else ""
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ", 1)
            types[name] = kind.strip()
        elif line.startswith("#"):
            continue
        else:
            m = SAMPLE_RE.match(line)
            if not m:
                fail(f"line {n} is not a sample: {line!r}")
            samples.append((m.group(1), parse_labels(m.group(3)), m.group(4)))

    problems, warnings = [], []
    families = {}
    for name, labels, value in samples:
        fam = family_of(name, types)
        families.setdefault(fam, []).append((name, labels, value))
    print(f"{len(samples)} samples in {len(families)} families")

    for fam in sorted(families):
        series = families[fam]
        label_names = sorted({k for _, labels, _ in series for k in labels} - {"le"})
        print(
            f"  {fam:40s} {types.get(fam, '?'):9s} {len(series):4d} samples  labels={label_names}\n"
            f"      HELP {helps.get(fam, '(none)')}"
        )
        if not fam.startswith("stockd_"):
            problems.append(f"{fam}: not prefixed stockd_")
        if not helps.get(fam, "").strip():
            problems.append(f"{fam}: no HELP text")
        if fam not in types:
            problems.append(f"{fam}: no TYPE line")
        if types.get(fam) == "summary":
            problems.append(f"{fam}: a summary; latencies must be histograms")
        if types.get(fam) == "counter" and not fam.endswith("_total"):
            problems.append(f"{fam}: a counter whose name does not end in _total")
        if re.search(r"duration|latency|_time", fam) and not fam.endswith("_seconds"):
            problems.append(f"{fam}: a duration whose name does not end in _seconds")
        if "bytes" in fam and not re.search(r"_bytes(_total)?$", fam):
            # Prometheus naming puts the unit last, before _total (e.g. *_written_bytes_total).
            # promtool does not flag it, so it is a warning only.
            warnings.append(f"{fam}: the unit 'bytes' is not the name's suffix (convention: ..._bytes_total)")
        bad = sorted({k for _, labels, _ in series for k in labels} - ALLOWED_LABELS)
        if bad:
            problems.append(f"{fam}: unbounded or unexpected labels {bad} (allowed: {sorted(ALLOWED_LABELS)})")
        kinds = {labels["kind"] for _, labels, _ in series if "kind" in labels}
        if kinds - MESSAGE_KINDS:
            problems.append(f"{fam}: unexpected kind values {sorted(kinds - MESSAGE_KINDS)}")

    for fam, (kind, need) in REQUIRED_FAMILIES.items():
        if fam not in families:
            problems.append(f"{fam}: not exported")
            continue
        if types.get(fam) != kind:
            problems.append(f"{fam}: TYPE {types.get(fam)}, expected {kind}")
        have = {k for _, labels, _ in families[fam] for k in labels}
        if need - have:
            problems.append(f"{fam}: missing labels {sorted(need - have)}")

    # Latency histograms: buckets from 25 us to 1 s, dense below 1 ms.
    for fam, kind in types.items():
        if kind != "histogram" or not fam.endswith("_seconds") or fam not in families:
            continue
        les = sorted({float(l["le"]) for n, l, _ in families[fam] if n.endswith("_bucket") and l["le"] != "+Inf"})
        below_ms = [b for b in les if b < 0.001]
        if not les or les[0] > 25e-6 or max(les) < 1.0 or len(below_ms) < 5:
            problems.append(f"{fam}: buckets {les} are not 25 us .. 1 s, dense below 1 ms")
        else:
            print(f"  {fam}: {len(les)} buckets {les[0]:g} .. {les[-1]:g} s, {len(below_ms)} below 1 ms")

    # Every outcome and lifecycle event on every channel.
    seen = {
        (l.get("channel"), l.get("outcome"))
        for _, l, v in families.get("stockd_reserve_outcomes_total", [])
        if float(v) > 0
    }
    for ch in CHANNELS:
        for o in OUTCOMES:
            if (ch, o) not in seen:
                problems.append(f'stockd_reserve_outcomes_total{{channel="{ch}",outcome="{o}"}}: missing or 0')
    seen = {
        (l.get("channel"), l.get("event")) for _, l, v in families.get("stockd_hold_events_total", []) if float(v) > 0
    }
    for ch in CHANNELS:
        for e in EVENTS:
            if (ch, e) not in seen:
                problems.append(f'stockd_hold_events_total{{channel="{ch}",event="{e}"}}: missing or 0')
    seen = {l.get("channel") for _, l, v in families.get("stockd_stockouts_total", []) if float(v) > 0}
    for ch in CHANNELS:
        if ch not in seen:
            problems.append(f'stockd_stockouts_total{{channel="{ch}"}}: missing or 0')

    if warnings:
        print("exposition warnings (not failures):")
        for w in warnings:
            print("  -", w)
    if problems:
        print("exposition problems:")
        for p in problems:
            print("  -", p)
        sys.exit(1)
    print("exposition: ok")


# -------------------------------------------------------------------- queries


def substitute(expr, variables):
    """Replaces Grafana variables ($name, ${name}, ${name:fmt}, [[name]]) in expr."""
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name in variables:
            return variables[name]
        unknown.append(name)
        return m.group(0)

    out = re.sub(r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]", repl, expr)
    return out, unknown


def dashboard_variables(dash):
    """Template variables other than data sources: their current value, else '.*'."""
    out = {}
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "datasource":
            continue
        cur = (v.get("current") or {}).get("value")
        if isinstance(cur, list):
            cur = "|".join(cur)
        if cur in (None, "", "$__all", "All"):
            cur = ".*"
        out[v["name"]] = str(cur)
    return out


def panel_targets(panels):
    for p in panels:
        for t in p.get("targets", []) or []:
            if t.get("expr"):
                yield p, t
        yield from panel_targets(p.get("panels", []) or [])


def cmd_queries(args):
    prom = args.prom
    ok = True

    # --- the two queries the issue names, retried until rate() has two samples.
    wanted = {
        "Reserve p99": 'histogram_quantile(0.99, sum by (le) (rate(stockd_rpc_duration_seconds_bucket{method="Reserve"}[1m])))',
        "outcome rates": "sum by (channel, outcome) (rate(stockd_reserve_outcomes_total[1m]))",
    }
    deadline = time.monotonic() + args.timeout
    while True:
        results, missing = {}, []
        for name, expr in wanted.items():
            doc = query(prom, expr)
            if doc.get("status") != "success":
                fail(f"{name}: query error {doc.get('errorType')}: {doc.get('error')}\n  {expr}")
            vals = values(doc)
            results[name] = vals
            if not vals or any(math.isnan(v) or math.isinf(v) for _, v in vals):
                missing.append(f"{name}: {'empty' if not vals else 'NaN/Inf'}")
        if not missing:
            break
        if time.monotonic() >= deadline:
            for name, expr in wanted.items():
                print(f"{name}: {expr}\n  -> {results[name]}")
            fail("after %.0f s: %s" % (args.timeout, "; ".join(missing)))
        time.sleep(1)
    print("Prometheus queries:")
    for name, expr in wanted.items():
        print(f"  {name}: {expr}")
        for labels, v in results[name]:
            print(f"      {fmt_labels(labels)} {v:.6g}")
    by = {(l.get("channel"), l.get("outcome")) for l, _ in results["outcome rates"]}
    for ch in CHANNELS:
        for o in OUTCOMES:
            if (ch, o) not in by:
                print(f"FAIL: outcome rate for channel={ch} outcome={o} is missing")
                ok = False

    # --- every dashboard panel target.
    dash = json.load(open(args.dashboard, encoding="utf-8"))
    variables = dashboard_variables(dash)
    names_doc = api(prom, "/api/v1/label/__name__/values")
    known = set(names_doc.get("data", []))
    rows, errors, empties = [], [], []
    for panel, target in panel_targets(dash.get("panels", [])):
        where = f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId', '?')}"
        expr, unknown = substitute(target["expr"], variables)
        if unknown:
            errors.append(f"{where}: unknown Grafana variable(s) {unknown} in {target['expr']}")
            rows.append((where, "ERROR", "unknown variable"))
            continue
        used = set(re.findall(r"\bstockd_[a-zA-Z0-9_]+", expr))
        not_exported = sorted(n for n in used if n not in known)
        inst = query(prom, expr)
        rng = query_range(prom, expr)
        if inst.get("status") != "success" or rng.get("status") != "success":
            bad = inst if inst.get("status") != "success" else rng
            errors.append(
                f"{where}: {bad.get('httpStatus', '')} {bad.get('errorType')}: {bad.get('error')}\n      {expr}"
            )
            rows.append((where, "ERROR", bad.get("error", "")[:60]))
            continue
        vals = values(inst)
        finite = [v for _, v in vals if not (math.isnan(v) or math.isinf(v))]
        families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
        may_be_empty = bool(families) and families <= MAY_BE_EMPTY
        if not_exported:
            msg = f"{where}: uses metric(s) Prometheus never scraped: {not_exported}\n      {expr}"
            if may_be_empty:
                empties.append(msg + " (allowed: may be empty in a short run)")
            else:
                errors.append(msg)
        if not finite:
            state = "EMPTY" if not vals else "NaN"
            if may_be_empty:
                rows.append((where, state + " (allowed)", expr))
                empties.append(f"{where}: {state} (allowed)")
            else:
                rows.append((where, state, expr))
                errors.append(f"{where}: {state} result\n      {expr}")
            continue
        sample = ", ".join(f"{fmt_labels(l)}={v:.4g}" for l, v in vals[:3])
        more = f" (+{len(vals) - 3} more)" if len(vals) > 3 else ""
        rows.append((where, f"ok {len(vals)} series", sample + more))

    print(f"\nDashboard {args.dashboard}: {len(rows)} panel target expressions")
    for where, state, detail in rows:
        print(f"  {state:18s} {where}\n  {'':18s}   {detail}")
    if empties:
        print("empty but allowed:")
        for e in empties:
            print("  -", e)
    if errors:
        print("dashboard failures:")
        for e in errors:
            print("  -", e)
        ok = False
    if not ok:
        sys.exit(1)
    print("queries: ok")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("wait-target")
    p.add_argument("--prom", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p = sub.add_parser("exposition")
    p.add_argument("file")
    p = sub.add_parser("queries")
    p.add_argument("--prom", required=True)
    p.add_argument("--dashboard", required=True)
    p.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    {"wait-target": cmd_wait_target, "exposition": cmd_exposition, "queries": cmd_queries}[args.cmd](args)


if __name__ == "__main__":
    main()
