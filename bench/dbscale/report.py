#!/usr/bin/python3
"""A markdown table of dbscale-<size>.json files (one column per size).

    report.py bench/results/dbscale-*.json [--md]
"""
import json
import sys

files = [f for f in sys.argv[1:] if not f.startswith("--")]
runs = sorted((json.load(open(f)) for f in files),
              key=lambda r: r["plan"]["messages"])


def cell(o):
    if o is None:
        return "—"
    extra = []
    if o["timeouts"]:
        extra.append("%d timed out" % o["timeouts"])
    if o.get("n_errors", len(o["errors"])):
        e = "%d × %s" % (o.get("n_errors", len(o["errors"])),
                         code(o["errors"]))
        if o.get("error_p50_ms") is not None:
            e += " after %s" % fmt(o["error_p50_ms"])
        extra.append(e)
    if o["n"] == 0:
        return "no answer: " + "; ".join(extra)
    s = "%s / %s (n=%d" % (fmt(o["p50_ms"]), fmt(o["p99_ms"]), o["n"])
    return s + ("; " + "; ".join(extra) if extra else "") + ")"


def code(errors):
    for e in errors:
        for c in ("storage_unavailable", "overloaded", "timeout"):
            if c in e:
                return "503 " + c if c != "timeout" else c
    return "error"


def fmt(x):
    return "{:,.0f}".format(x) if x >= 100 else "%.1f" % x


hdr = ["operation (p50 / p99 ms)"] + ["{:,}".format(r["plan"]["messages"])
                                      for r in runs]
print("| " + " | ".join(hdr) + " |")
print("| --- |" + " ---: |" * len(runs))
print("| generation: s (docs/s) | " + " | ".join(
    "%.0f (%s)" % (r["plan"]["seconds"]["total"],
                   "{:,}".format(r["plan"]["docs_per_s"])) for r in runs)
    + " |")
names = []
for r in runs:
    for o in r["ops"]:
        if o["op"] not in names:
            names.append(o["op"])
for name in names:
    row = [name]
    for r in runs:
        row.append(cell(next((o for o in r["ops"] if o["op"] == name), None)))
    print("| " + " | ".join(row) + " |")
print()
print("| MongoDB commands per operation | " + " | ".join(hdr[1:]) + " |")
print("| --- |" + " ---: |" * len(runs))
for name in names:
    row = [name]
    for r in runs:
        o = next((o for o in r["ops"] if o["op"] == name), None)
        row.append("—" if o is None or o["mongo_cmds_per_op"] is None
                   else str(o["mongo_cmds_per_op"]))
    print("| " + " | ".join(row) + " |")
