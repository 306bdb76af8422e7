#!/usr/bin/env python3
"""Summaries of ws-load results, written by bench/ws/run.sh.

    report.py --wrap --scenario S --target T --rep N --workers N
              [--ladder | --names A,B,...] [--connect NAME] RAW < output
                                       appends ws-load's lines to RAW (with
                                       --ladder, one scenario per rate step:
                                       S-r<step>; with --names, the steps'
                                       names) and prints one line each;
                                       --connect records the connection
                                       phase (time, memory) as NAME
    report.py --out FILE --meta JSON RAW
                                       medians per scenario and target,
                                       module/nchan ratios, a table

RAW has one JSON object a line: {scenario, target, rep, workers, result},
result being ws-load's output line (null if it printed nothing).
"""

import argparse
import json
import re
import statistics
import sys

# the metrics summarised, as (name, getter)
METRICS = [
    ("offered_deliveries_per_s", lambda r: r.get("offered_deliveries_per_s")),
    ("delivered_per_s", lambda r: r.get("delivered_per_s")),
    ("accepted_msgs_per_s", lambda r: r.get("accepted_msgs_per_s")),
    ("latency_p50_ms", lambda r: ms(r, "latency_us", "p50")),
    ("latency_p99_ms", lambda r: ms(r, "latency_us", "p99")),
    ("latency_max_ms", lambda r: ms(r, "latency_us", "max")),
    ("post_p99_ms", lambda r: ms(r, "post_latency_us", "p99")),
    ("loss", lambda r: r.get("loss")),
    ("loss_pct", lambda r: r.get("loss_pct")),
    ("server_cpu_cores", lambda r: r.get("server_cpu_cores")),
    ("server_cpu_us_per_delivery",
     lambda r: r.get("server_cpu_us_per_delivery")),
    ("db_cpu_cores", lambda r: r.get("db_cpu_cores")),
    ("tool_cpu_cores", lambda r: r.get("tool_cpu_cores")),
    ("connect_s", lambda r: r.get("connect_s")),
    ("settle_s", lambda r: r.get("settle_s")),
    ("ready", lambda r: r.get("ready")),
    ("connect_failed", lambda r: r.get("connect_failed")),
    ("closed_while_ready", lambda r: r.get("closed_while_ready")),
    ("rss_bytes_per_conn", lambda r: r.get("rss_bytes_per_conn")),
    ("anon_bytes_per_conn", lambda r: r.get("anon_bytes_per_conn")),
    ("rss_growth_kb", lambda r: growth(r)),
]


def ms(r, h, k):
    v = (r.get(h) or {}).get(k)
    return None if v is None else v / 1000.0


def growth(r):
    kb = r.get("rss_kb") or {}
    if "end" in kb and "after_connect" in kb:
        return kb["end"] - kb["after_connect"]
    return None


def load(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) < 10 and nd:
        return "%.2f" % v
    if isinstance(v, float):
        return "%.*f" % (nd, v)
    return str(v)


def one_line(rec):
    r = rec["result"]
    head = "  %-20s %-5s rep %d:" % (rec["scenario"], rec["target"],
                                      rec["rep"])
    if r is None:
        return head + " no result (the tool printed nothing)"
    if r.get("mode") == "idle":
        return (head + " %d ready, %d failed, connect %.1f s, settle %.1f s,"
                " %d events, RSS +%.0f B/conn (anon +%.0f)"
                % (r["ready"], r["connect_failed"], r["connect_s"],
                   r["settle_s"], r.get("events_during_connect", 0),
                   r["rss_bytes_per_conn"], r["anon_bytes_per_conn"]))
    s = (head + " offered %.0f/s delivered %.0f/s, p50 %.1f p99 %.1f max"
         " %.1f ms, loss %d, %.2f us CPU/delivery (nginx %.2f db %.2f"
         " tool %.2f cores)"
         % (r["offered_deliveries_per_s"], r["delivered_per_s"],
            ms(r, "latency_us", "p50"), ms(r, "latency_us", "p99"),
            ms(r, "latency_us", "max"), r["loss"],
            r["server_cpu_us_per_delivery"], r["server_cpu_cores"],
            r["db_cpu_cores"], r["tool_cpu_cores"]))
    extra = []
    if r.get("aborted"):
        extra.append("ABORTED (%s)" % r.get("abort_reason"))
    if r.get("connect_failed"):
        extra.append("%d failed to connect" % r["connect_failed"])
    if r.get("closed_while_ready"):
        extra.append("%d closed (%s)" % (r["closed_while_ready"],
                                         r.get("closes")))
    for k in ("duplicates", "out_of_order", "foreign", "unsent",
              "failed_posts", "unanswered_posts", "delivered_unanswered"):
        if r.get(k):
            extra.append("%s %d" % (k, r[k]))
    if r.get("notes"):
        extra.append(r["notes"])
    return s + ("; " + "; ".join(extra) if extra else "")


def summarise(recs):
    keys = []
    by = {}
    for rec in recs:
        k = (rec["workers"], rec["scenario"], rec["target"])
        if k not in by:
            by[k] = []
            keys.append(k)
        by[k].append(rec)

    rows = []
    for k in keys:
        rs = [x["result"] for x in by[k] if x["result"]]
        row = {"workers": k[0], "scenario": k[1], "target": k[2],
               "reps": len(by[k]), "results": len(rs),
               "aborted": sum(1 for r in rs if r.get("aborted"))}
        for name, get in METRICS:
            vals = [get(r) for r in rs]
            vals = [v for v in vals if v is not None]
            row[name] = statistics.median(vals) if vals else None
            if name in ("loss", "connect_failed", "closed_while_ready"):
                row[name + "_total"] = sum(vals) if vals else None
        rows.append(row)

    # module / nchan, scenario by scenario
    ratios = []
    idx = {(r["workers"], r["scenario"], r["target"]): r for r in rows}
    for (w, s, t), r in idx.items():
        if t != "foko" or (w, s, "nchan") not in idx:
            continue
        n = idx[(w, s, "nchan")]
        q = {"workers": w, "scenario": s}
        for name, _ in METRICS:
            a, b = r.get(name), n.get(name)
            q[name] = (a / b) if (a is not None and b) else None
        ratios.append(q)

    return rows, ratios


def sustained(rows):
    """The highest rate of each ladder that was delivered in full: at least
    95% of the offered deliveries, under 0.1% loss, p99 under 1 s."""
    out = {}
    for r in rows:
        m = re.match(r"(w2-)?(fanout1k|fanout5k|mixed)-r(\d+)$",
                     r["scenario"])
        if not m or r["delivered_per_s"] is None:
            continue
        key = "%s%s/%s/w%d" % (m.group(1) or "", m.group(2), r["target"],
                               r["workers"])
        ok = (r["offered_deliveries_per_s"]
              and r["delivered_per_s"] >= 0.95 * r["offered_deliveries_per_s"]
              and (r["loss_pct"] or 0) < 0.1
              and (r["latency_p99_ms"] or 0) < 1000)
        if ok:
            rate = int(m.group(3))
            if rate > out.get(key, {}).get("rate", -1):
                out[key] = {"rate": rate,
                            "deliveries_per_s": r["delivered_per_s"]}
        else:
            out.setdefault(key, {"rate": None, "deliveries_per_s": None})
    return out


def is_idle(s):
    return s.startswith("idle") or s.startswith("connect")


def table(rows, ratios):
    load = [r for r in rows if not is_idle(r["scenario"])]
    idle = [r for r in rows if is_idle(r["scenario"])]
    lines = []
    lines.append("| workers | scenario | target | offered deliv/s |"
                 " delivered/s | p50 ms | p99 ms | max ms | loss |"
                 " nginx us/deliv | nginx cores | db cores | tool cores |")
    lines.append("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"
                 " ---: | ---: | ---: | ---: | ---: |")
    for r in load:
        lines.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
                     " %s | %s | %s |"
                     % (r["workers"], r["scenario"], r["target"],
                        fmt(r["offered_deliveries_per_s"], 0),
                        fmt(r["delivered_per_s"], 0),
                        fmt(r["latency_p50_ms"]), fmt(r["latency_p99_ms"]),
                        fmt(r["latency_max_ms"]), fmt(r["loss_total"]),
                        fmt(r["server_cpu_us_per_delivery"]),
                        fmt(r["server_cpu_cores"]), fmt(r["db_cpu_cores"]),
                        fmt(r["tool_cpu_cores"])))
    if idle:
        lines.append("")
        lines.append("| workers | connections | target | ready | connect s |"
                     " settle s | RSS B/conn | anon B/conn |")
        lines.append("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for r in idle:
            lines.append("| %d | %s | %s | %s | %s | %s | %s | %s |"
                         % (r["workers"], r["scenario"], r["target"],
                            fmt(r["ready"], 0), fmt(r["connect_s"]),
                            fmt(r["settle_s"]),
                            fmt(r["rss_bytes_per_conn"], 0),
                            fmt(r["anon_bytes_per_conn"], 0)))
    if ratios:
        lines.append("")
        lines.append("module / nchan (medians):")
        lines.append("")
        lines.append("| workers | scenario | delivered/s | p50 | p99 |"
                     " nginx us/deliv | RSS B/conn |")
        lines.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        for q in ratios:
            idl = is_idle(q["scenario"])
            lines.append("| %d | %s | %s | %s | %s | %s | %s |"
                         % (q["workers"], q["scenario"],
                            "-" if idl else fmt(q["delivered_per_s"], 2),
                            "-" if idl else fmt(q["latency_p50_ms"], 2),
                            "-" if idl else fmt(q["latency_p99_ms"], 2),
                            "-" if idl
                            else fmt(q["server_cpu_us_per_delivery"], 2),
                            fmt(q["rss_bytes_per_conn"], 2) if idl
                            else "-"))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--wrap", action="store_true")
    p.add_argument("--scenario")
    p.add_argument("--target")
    p.add_argument("--rep", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--ladder", action="store_true")
    p.add_argument("--names")
    p.add_argument("--connect")
    p.add_argument("--out")
    p.add_argument("--meta", default="{}")
    p.add_argument("raw")
    a = p.parse_args()

    if a.wrap:
        got = []
        for line in sys.stdin:
            line = line.strip()
            if line.startswith("{"):
                try:
                    got.append(json.loads(line))
                except ValueError:
                    pass
        recs = []
        names = a.names.split(",") if a.names else []
        if a.connect and got:
            # the connection phase alone, as an idle measurement
            c = {k: v for k, v in got[0].items()
                 if k in ("tool", "target", "label", "aborted", "pids",
                          "subscribers", "ready", "slow", "connect_failed",
                          "connect_s", "settle_s", "events_during_connect",
                          "rss_kb", "rss_bytes_per_conn",
                          "anon_bytes_per_conn")}
            c["mode"] = "idle"
            recs.append({"scenario": a.connect, "target": a.target,
                         "rep": a.rep, "workers": a.workers, "result": c})
        for i, r in enumerate(got):
            s = a.scenario
            if i < len(names):
                s = names[i]
            elif a.ladder:
                s = "%s-r%g" % (s, r.get("step", 1))
            recs.append({"scenario": s, "target": a.target, "rep": a.rep,
                         "workers": a.workers, "result": r})
        if not recs:
            recs.append({"scenario": a.scenario, "target": a.target,
                         "rep": a.rep, "workers": a.workers,
                         "result": None})
        with open(a.raw, "a") as f:
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
                print(one_line(rec), flush=True)
        return

    recs = load(a.raw)

    rows, ratios = summarise(recs)
    out = {"meta": json.loads(a.meta), "summary": rows, "ratios": ratios,
           "sustained": sustained(rows), "runs": recs}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    print()
    print(table(rows, ratios))
    print()
    for k, v in sorted(out["sustained"].items()):
        print("highest rate delivered in full, %s: %s msgs/s (%s deliveries/s)"
              % (k, v["rate"], fmt(v["deliveries_per_s"], 0)))


if __name__ == "__main__":
    sys.exit(main())
