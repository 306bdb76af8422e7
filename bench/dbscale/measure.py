#!/usr/bin/python3
"""Times the module's hot paths through nginx on a dataset of gen.py.

    measure.py --port NGINX_PORT --mongo URI --plan plan.json
               --ferretdb-pid PID [--n 30] [--n-slow 5] [--budget 90]
               [--timeout 300] [--json out.json]

Each operation is run up to --n times (the slow ones --n-slow times), one
request at a time, and stops early once its samples took --budget seconds
(at least one sample).  A request still unanswered after --timeout counts
as a timeout (reported as "> timeout").  Before each operation the script
waits (at most --timeout) until FerretDB is idle (under 10% of a core for
a second), so that work left over by an earlier timeout does not slow the
next one.  MongoDB commands per operation: FerretDB's serverStatus
counters (find, aggregate, count, getMore, insert, update, delete,
findAndModify) before and after, divided by the samples.

Operations, in this order (a channel is "in the zone" once anything loaded
it; nothing in the dataset is, at the start):

  post_cold            POST a message to a channel not in the zone (a new
                       channel each time)
  post_warm            POST to a channel in the zone
  history_newest_cold  GET the newest page of a channel not in the zone
  history_newest_again the same channel again (a GET alone does not put
                       a channel in the zone)
  history_newest_zone  the newest page of the post_warm channel: in the
                       zone, from its ring
  history_old          GET ?before=<middle seq> in the big channel
                       (beyond the ring: always MongoDB)
  signin_cold          WebSocket auth -> ready for a user whose 20
                       channels are not in the zone (u1..u5)
  signin_warm          the same users again, their channels now in the zone
  channels_list        GET /api/channels for u0: 20 channels, with unread
                       counts (14 read marks)
"""

import argparse
import json
import socket
import sys
import time
import uuid

import pymongo

import foko

COUNTED = ("find", "aggregate", "count", "getMore", "insert", "update",
           "delete", "findAndModify")


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_idle(pid, limit):
    t0 = time.monotonic()
    hz = 100.0
    while time.monotonic() - t0 < limit:
        a = cpu_ticks(pid)
        time.sleep(1.0)
        if (cpu_ticks(pid) - a) / hz < 0.10:
            return time.monotonic() - t0
    return time.monotonic() - t0


def commands(db):
    c = db.command("serverStatus")["metrics"]["commands"]
    return sum(c.get(k, {}).get("total", 0) for k in COUNTED)


class Op:
    def __init__(self, name, n, what):
        self.name, self.n, self.what = name, n, what
        self.samples, self.timeouts, self.errors = [], 0, []
        self.error_times = []


def run_op(op, fn, args, db, fpid):
    idle = wait_idle(fpid, args.timeout)
    c0 = commands(db)
    t0 = time.monotonic()
    for i in range(op.n):
        if i and time.monotonic() - t0 > args.budget:
            break
        try:
            dt = fn(i)
        except socket.timeout:
            op.timeouts += 1
            break
        except Exception as e:          # an error is a result too
            op.errors.append(str(e.args[0])[:200])
            if len(e.args) > 1:
                op.error_times.append(e.args[1])
            continue
        if dt is None:
            continue
        op.samples.append(dt)
    c1 = commands(db)
    done = len(op.samples) + op.timeouts + len(op.errors)
    r = {"op": op.name, "what": op.what, "n": len(op.samples),
         "timeouts": op.timeouts, "errors": op.errors[:3],
         "n_errors": len(op.errors),
         "error_p50_ms": ms(foko.quantile(op.error_times, 0.5)),
         "p50_ms": ms(foko.quantile(op.samples, 0.5)),
         "p99_ms": ms(foko.quantile(op.samples, 0.99)),
         "max_ms": ms(max(op.samples) if op.samples else None),
         "mongo_cmds_per_op": round((c1 - c0) / done, 1) if done else None,
         "waited_idle_s": round(idle, 1),
         "samples_ms": [ms(dt) for dt in op.samples]}
    print("  %-20s n=%-3d p50 %10s ms  p99 %10s ms  cmds/op %-6s%s"
          % (op.name, r["n"], r["p50_ms"], r["p99_ms"],
             r["mongo_cmds_per_op"],
             ("  timeouts %d (> %d s)" % (op.timeouts, args.timeout))
             if op.timeouts else "") + (
             ("  %d errors after %s ms (p50): %r" % (
                 len(op.errors), r["error_p50_ms"], op.errors[:1]))
             if op.errors else ""),
          file=sys.stderr, flush=True)
    return r


def ms(s):
    return None if s is None else round(s * 1000.0, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mongo", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--ferretdb-pid", type=int, required=True)
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--n-slow", type=int, default=5)
    p.add_argument("--budget", type=float, default=90)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--ops", default="")
    p.add_argument("--json")
    args = p.parse_args()

    plan = json.load(open(args.plan))
    db = pymongo.MongoClient(args.mongo).get_default_database()
    api = foko.Http(args.port, args.timeout)
    spare = plan["spare"]
    big = plan["big"]
    u0 = plan["u0"]
    cold = plan["cold_users"]
    results = []
    only = set(args.ops.split(",")) if args.ops else None

    def post(ch, tok):
        st, r, dt = api.call("POST", "/api/channels/%s/messages" % ch,
                             {"text": "bench post",
                              "client_id": uuid.uuid4().hex}, tok)
        if st != 201:
            raise RuntimeError("post answered %d %r" % (st, r), dt)
        return dt

    def page(ch, tok, q=""):
        st, r, dt = api.call("GET", "/api/channels/%s/messages%s" % (ch, q),
                             token=tok)
        if st != 200 or not r["messages"]:
            raise RuntimeError("page answered %d %r" % (st, str(r)[:100]),
                               dt)
        return dt

    def signin(u):
        dt, m = foko.ws_signin(args.port, u["token"], args.timeout)
        if len(m["channels"]) != 20:
            raise RuntimeError("ready with %d channels" % len(m["channels"]))
        return dt

    def listing(i):
        st, r, dt = api.call("GET", "/api/channels", token=u0["token"])
        if st != 200 or len(r) != 20:
            raise RuntimeError("list answered %d %r" % (st, str(r)[:100]),
                               dt)
        if sum(1 for c in r if c["unread"] > 0) == 0:
            raise RuntimeError("no unread counts")
        return dt

    warm = spare[0]

    def prime():
        """Loads the channel (not a sample): retried until it answers."""
        for _ in range(5):
            try:
                post(warm["id"], warm["token"])
                return None
            except RuntimeError:
                time.sleep(1)
        raise RuntimeError("the channel could not be loaded")
    ops = [
        ("post_cold", args.n_slow, "POST, channel not in the zone",
         lambda i: post(spare[1 + i]["id"], spare[1 + i]["token"])),
        ("post_warm", args.n, "POST, channel in the zone",
         lambda i: post(warm["id"], warm["token"]) if i else prime()),
        ("history_newest_cold", args.n_slow,
         "newest page, channel not in the zone",
         lambda i: page(spare[50 + i]["id"], spare[50 + i]["token"])),
        ("history_newest_again", args.n_slow,
         "the same page again (a GET does not cache the channel)",
         lambda i: page(spare[50]["id"], spare[50]["token"])),
        ("history_newest_zone", args.n,
         "newest page, channel in the zone (ring)",
         lambda i: page(warm["id"], warm["token"])),
        ("history_old", args.n_slow,
         "page before the middle of the big channel",
         lambda i: page(big["id"], u0["token"],
                        "?before=%d" % (big["count"] // 2 - 50 * i))),
        ("signin_cold", args.n_slow, "WebSocket auth->ready, 20 channels "
         "not in the zone", lambda i: signin(cold[i % len(cold)])),
        ("signin_warm", args.n, "WebSocket auth->ready, 20 channels "
         "in the zone", lambda i: signin(cold[0])),
        ("channels_list", args.n_slow, "GET /api/channels, 20 channels "
         "with unread counts", listing),
    ]
    for name, n, what, fn in ops:
        if only and name not in only:
            continue
        results.append(run_op(Op(name, n, what), fn, args, db,
                              args.ferretdb_pid))
    out = {"plan": {k: plan[k] for k in ("messages", "stored", "seconds",
                                         "docs_per_s")},
           "ops": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
