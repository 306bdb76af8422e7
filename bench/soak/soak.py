#!/usr/bin/env python3
"""Soak: thousands of WebSocket clients that send and receive at a steady
rate while nginx is reloaded and a worker is killed, then a count of what
was sent, acknowledged, received, lost and duplicated.  See bench/README.md,
section "Soak"; bench/soak/run.sh starts FerretDB and nginx and calls this.

    soak.py --port P --pid-file F [--channels 100] [--members 25]
            [--rate 200] [--duration 120] [--reload-at 40] [--kill-at 80]
            [--json out.json]

Every client is a user in one channel.  Clients sign in over /ws with an
auth frame, keep the last seq they saw, and after a close reconnect with
a random backoff (0.1 to 2 s) and resume from it in the auth frame (as the
web client does: the channel comes in strict seq order).  The sender picks
clients at random at --rate messages/s; each "send" carries a client_id
and the send time in its text, and is sent again with the same client_id
(on the next connection if need be) until it is acknowledged.  Afterwards
history (REST) is the truth: a client lost what history has and it never
got, and a duplicate is a seq it got twice.  Latency is a delivery's
receive time minus the first send time of its message.
"""

import argparse
import asyncio
import base64
import concurrent.futures
import http.client
import json
import os
import random
import signal
import struct
import sys
import time

PASSWORD = "soak password"


# ------------------------------------------------------------------ REST

def rest(port, method, path, body=None, token=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request(method, path, json.dumps(body) if body is not None else None,
                 headers)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    return res.status, (json.loads(data) if data else None)


def setup(port, n_channels, members, tag):
    """Users (signed up 8 at a time) and channels of `members` users each."""
    n = n_channels * members

    def signup(i):
        for attempt in range(20):
            st, res = rest(port, "POST", "/api/auth/signup", {
                "email": "soak-%s-%d@example.com" % (tag, i),
                "password": PASSWORD, "username": "s%d" % i})
            if st == 201:
                return res["user"]["id"], res["token"]
            time.sleep(0.2 * (attempt + 1))
        raise SystemExit("signup %d: %s %s" % (i, st, res))

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        users = list(ex.map(signup, range(n)))

    def channel(c):
        group = users[c * members:(c + 1) * members]
        st, res = rest(port, "POST", "/api/channels", {
            "name": "soak %d" % c, "members": [u[0] for u in group[1:]]},
            token=group[0][1])
        if st != 201:
            raise SystemExit("channel %d: %s %s" % (c, st, res))
        return res["id"]

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        channels = list(ex.map(channel, range(n_channels)))
    return users, channels


def history(port, cid, token):
    msgs, after = [], 0
    while True:
        st, res = rest(port, "GET", "/api/channels/%s/messages?after=%d"
                       "&limit=200" % (cid, after), token=token, timeout=120)
        if st != 200:
            raise RuntimeError("history %s: %s" % (cid, st))
        msgs += res["messages"]
        if not res["has_more"] or not res["messages"]:
            return msgs
        after = res["messages"][-1]["seq"]


# ------------------------------------------------------------------ WebSocket

class Closed(Exception):
    pass


def frame(payload, opcode=1):
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


class Client:
    def __init__(self, soak, idx, uid, token, cid):
        self.soak, self.idx, self.uid, self.token, self.cid = \
            soak, idx, uid, token, cid
        self.writer = None
        self.ready = False
        self.last = 0           # highest seq seen
        self.seen = {}          # seq -> times received
        self.order_errors = 0
        self.pending = {}       # ref -> post
        self.closes = 0
        self.resumes = 0

    async def run(self):
        while not self.soak.done:
            try:
                await self.session()
            except (OSError, Closed, asyncio.IncompleteReadError,
                    asyncio.TimeoutError):
                pass
            self.ready = False
            self.writer = None
            if self.soak.done:
                return
            self.closes += 1
            for post in self.pending.values():
                self.soak.requeue(post)
            self.pending.clear()
            await asyncio.sleep(random.uniform(0.1, 2.0))

    async def session(self):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", self.soak.port), 10)
        self.writer = writer
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write((
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                "\r\n" % key
            ).encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise Closed()
            # signed in by the auth frame, resumed in it as the web client
            # does: the channel then comes in strict seq order
            auth = {"type": "auth", "token": self.token}
            if self.last:
                auth["resume"] = {self.cid: self.last}
                self.resumes += 1
            self.send(auth)
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7f
                if n == 126:
                    n = struct.unpack("!H", await reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await reader.readexactly(8))[0]
                payload = await reader.readexactly(n)
                op = b0 & 0x0f
                if op == 9:
                    writer.write(frame(payload, 10))
                elif op == 8:
                    raise Closed()
                elif op == 1:
                    self.event(json.loads(payload))
        finally:
            writer.close()

    def send(self, obj):
        self.writer.write(frame(json.dumps(obj).encode()))

    def event(self, ev):
        t = ev.get("type")
        if t == "message":
            m = ev["message"]
            if m["channel_id"] != self.cid:
                return
            seq = m["seq"]
            n = self.seen.get(seq, 0)
            self.seen[seq] = n + 1
            if n == 0:
                if seq < self.last:
                    self.order_errors += 1
                self.soak.delivered(m)
            else:
                self.soak.duplicates += 1
            self.last = max(self.last, seq)
        elif t == "ready":
            self.ready = True
        elif t in ("ack", "error"):
            post = self.pending.pop(ev.get("ref"), None)
            if post is None:
                return
            if t == "ack":
                self.soak.acked(post, ev["message"])
            else:
                post["errors"] += 1
                self.soak.requeue(post)


class Soak:
    def __init__(self, args, users, channels):
        self.args = args
        self.port = args.port
        self.done = False
        self.clients = []
        for i, (uid, token) in enumerate(users):
            self.clients.append(Client(self, i, uid, token,
                                       channels[i // args.members]))
        self.posts = {}         # client_id -> post
        self.retry = []
        self.duplicates = 0
        self.received = 0
        self.latencies = []
        self.nref = 0
        self.events = []

    def delivered(self, m):
        self.received += 1
        post = self.posts.get(m.get("client_id") or "")
        if post:
            self.latencies.append(time.monotonic() - post["t"])

    def acked(self, post, m):
        if post["acked"] is None:
            post["acked"] = m["seq"]

    def requeue(self, post):
        if post["acked"] is None:
            self.retry.append(post)

    def submit(self, post):
        c = self.clients[post["client"]]
        if not c.ready or self.done:
            self.retry.append(post)
            return
        self.nref += 1
        ref = "r%d" % self.nref
        c.pending[ref] = post
        post["sends"] += 1
        c.send({"type": "send", "ref": ref, "channel_id": c.cid,
                "text": "soak %s" % post["client_id"],
                "client_id": post["client_id"]})

    async def sender(self, until):
        n = 0
        t0 = time.monotonic()
        while time.monotonic() < until:
            n += 1
            await asyncio.sleep(max(0, t0 + n / self.args.rate
                                    - time.monotonic()))
            retry, self.retry = self.retry, []
            for post in retry:
                self.submit(post)
            c = random.randrange(len(self.clients))
            post = {"client_id": "k%d" % n, "client": c, "t": time.monotonic(),
                    "acked": None, "sends": 0, "errors": 0}
            self.posts[post["client_id"]] = post
            self.submit(post)

    async def drain(self, limit):
        t_end = time.monotonic() + limit
        while time.monotonic() < t_end:
            retry, self.retry = self.retry, []
            for post in retry:
                self.submit(post)
            if all(p["acked"] is not None for p in self.posts.values()):
                return True
            await asyncio.sleep(0.2)
        return False

    def note(self, what):
        t = time.monotonic() - self.t0
        self.events.append("%.1f s: %s" % (t, what))
        print("soak: %.1f s: %s" % (t, what), file=sys.stderr, flush=True)


def workers_of(master):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open("/proc/%s/stat" % d).read()
            cmd = open("/proc/%s/cmdline" % d, "rb").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == master \
                and b"worker process" in cmd:
            out.append(int(d))
    return sorted(out)


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


async def main_async(args, users, channels):
    soak = Soak(args, users, channels)
    master = int(open(args.pid_file).read())
    soak.t0 = time.monotonic()
    tasks = []
    for c in soak.clients:
        tasks.append(asyncio.ensure_future(c.run()))
        await asyncio.sleep(0.002)
    t_conn = time.monotonic()
    while sum(c.ready for c in soak.clients) < len(soak.clients):
        if time.monotonic() - t_conn > 300:
            raise SystemExit("not every client signed in within 300 s")
        await asyncio.sleep(0.2)
    soak.note("%d clients ready in %.1f s" % (len(soak.clients),
                                              time.monotonic() - soak.t0))
    rss_start = {p: rss_kb(p) for p in workers_of(master)}
    t_load = time.monotonic()
    until = t_load + args.duration
    send = asyncio.ensure_future(soak.sender(until))

    async def at(seconds, what, fn):
        await asyncio.sleep(max(0, t_load + seconds - time.monotonic()))
        soak.note(what + fn())

    faults = []
    if args.reload_at:
        faults.append(at(args.reload_at, "reload (SIGHUP)",
                         lambda: os.kill(master, signal.SIGHUP) or ""))

    def kill():
        pids = workers_of(master)
        os.kill(pids[0], signal.SIGKILL)
        return ", worker %d" % pids[0]
    if args.kill_at:
        faults.append(at(args.kill_at, "worker killed (SIGKILL)", kill))
    await asyncio.gather(send, *faults)
    soak.note("sending stopped")
    # a worker's clients sign in again after the kill: minutes on FerretDB
    all_acked = await soak.drain(240)
    await asyncio.sleep(3)
    soak.note("drained" if all_acked else "not every send acknowledged")
    rss_end = {p: rss_kb(p) for p in workers_of(master)}

    # the truth: history of every channel, until it shows every ack
    loop = asyncio.get_event_loop()
    hist = {}
    for cid in channels:
        want = max([p["acked"] for p in soak.posts.values()
                    if p["acked"] is not None
                    and soak.clients[p["client"]].cid == cid] or [0])
        # when some sends were never acknowledged the database is swamped:
        # a few tries per channel, so that the run still reports
        for _ in range(40 if all_acked else 3):
            owner = users[channels.index(cid) * args.members][1]
            try:
                hist[cid] = await loop.run_in_executor(
                    None, history, args.port, cid, owner)
            except (OSError, RuntimeError) as e:
                soak.note("history of %s: %s" % (cid, e))
                hist[cid] = []
                await asyncio.sleep(1)
                continue
            if max([m["seq"] for m in hist[cid]] or [0]) >= want:
                break
            await asyncio.sleep(1)
    await asyncio.sleep(2)      # late duplicates
    soak.done = True
    for c in soak.clients:
        if c.writer:
            c.writer.close()
    for t in tasks:
        t.cancel()

    lost = expected = order = 0
    stored_ids = {}
    gaps = 0
    for cid in channels:
        msgs = hist[cid]
        seqs = [m["seq"] for m in msgs]
        gaps += (max(seqs) if seqs else 0) - len(set(seqs))
        for m in msgs:
            if m.get("client_id"):
                stored_ids[m["client_id"]] = stored_ids.get(m["client_id"],
                                                            0) + 1
        live = [m["seq"] for m in msgs if not m.get("deleted")]
        for c in soak.clients:
            if c.cid != cid:
                continue
            expected += len(live)
            lost += sum(1 for s in live if s not in c.seen)
    for c in soak.clients:
        order += c.order_errors
    acked = [p for p in soak.posts.values() if p["acked"] is not None]
    stored_twice = sum(1 for n in stored_ids.values() if n > 1)
    acked_missing = sum(1 for p in acked if p["client_id"] not in stored_ids)
    lat = soak.latencies
    res = {
        "clients": len(soak.clients), "channels": len(channels),
        "members": args.members, "rate": args.rate,
        "duration_s": args.duration,
        "sent": len(soak.posts),
        "sends_with_retries": sum(p["sends"] for p in soak.posts.values()),
        "error_answers": sum(p["errors"] for p in soak.posts.values()),
        "acknowledged": len(acked),
        "acked_not_in_history": acked_missing,
        "stored_twice": stored_twice, "seq_gaps": gaps,
        "expected_deliveries": expected, "received": soak.received,
        "lost": lost, "duplicated": soak.duplicates, "out_of_order": order,
        "latency_p50_ms": round(pct(lat, 0.5) * 1000, 1) if lat else None,
        "latency_p99_ms": round(pct(lat, 0.99) * 1000, 1) if lat else None,
        "latency_max_ms": round(max(lat) * 1000, 1) if lat else None,
        "reconnects": sum(c.closes for c in soak.clients),
        "resumes": sum(c.resumes for c in soak.clients),
        "worker_rss_start_kb": rss_start, "worker_rss_end_kb": rss_end,
        "events": soak.events,
    }
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--members", type=int, default=25)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--duration", type=float, default=120)
    ap.add_argument("--reload-at", type=float, default=40)
    ap.add_argument("--kill-at", type=float, default=80)
    ap.add_argument("--json")
    args = ap.parse_args()
    t = time.monotonic()
    users, channels = setup(args.port, args.channels, args.members,
                            "%d%d" % (os.getpid(), int(time.time())))
    print("soak: setup of %d users and %d channels in %.1f s"
          % (len(users), len(channels), time.monotonic() - t),
          file=sys.stderr, flush=True)
    res = asyncio.get_event_loop().run_until_complete(
        main_async(args, users, channels))
    out = json.dumps(res, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(out + "\n")
    print(out)
    bad = res["lost"] or res["duplicated"] or res["acked_not_in_history"] \
        or res["stored_twice"] or res["out_of_order"] \
        or res["acknowledged"] < res["sent"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
