#!/usr/bin/env python3
"""Users and rooms for the ws-load benchmark, made through the REST API.

    setup.py --url http://127.0.0.1:PORT --out rooms.txt
             [--mongo mongodb://127.0.0.1:PORT/DB]
             [--big 5000] [--room1k 1000] [--busy 100]
             [--small-rooms 2000] [--small-members 5] [--threads 8]
    setup.py --trim --mongo mongodb://127.0.0.1:PORT/DB
    setup.py --prune --mongo mongodb://127.0.0.1:PORT/DB --rooms rooms.txt
             --keep GROUP[:N],...

Accounts: --big users b0..b{big-1} and small-rooms x small-members users
s0..s{n-1}.  Rooms:

    room1k  b0..b999      (one room)
    room5k  b0..b4999     (one room: created with the first 2400, a request
                           body being at most 64 KiB; see below for the rest)
    busy    b0..b99       (one room)
    small   s0..s4, s5..s9, ...   (2000 rooms of 5)

A user of one group is never in a room of another group that is live in
the same scenario: the "big" users are online only in room1k, room5k and
the mixed scenario's busy room, never with the small rooms' users.  One
message is posted in every room so that the module has every channel in
its cache before a measurement.

The output, read by ws-load --rooms-file:

    group NAME ROOMS MEMBERS
    room CHANNEL_ID
    tok TOKEN            (MEMBERS lines; the first is the room's creator,
                          who publishes)

With --mongo, room5k's members past the first 2400 are added with one
$push to the channel's "members" array in the database, the same array
the module's invitation pushes to.  Each invitation into a channel of
thousands of members takes seconds on FerretDB: its answer lists every
member's name, looked up with an "_id $in" query that FerretDB's SQLite
backend does not push down (a scan of "users" for every member), so 2600
of them take hours.  This happens before any message is posted in room5k:
the module caches a channel's members only when a message goes through it.
Without --mongo, they are invited one by one through the API.

An interrupted setup is taken up again: the accounts that exist are signed
in (each sign-in costs about a second on FerretDB with 15,000 users), and
the channels that exist are found in the database by name.

--trim deletes the messages ws-load posted (their text starts with "t="):
each WebSocket sign-in makes the module look up the highest seq of every
channel of the user, a scan of "messages" on FerretDB, so a collection
that grows with every measurement makes connecting slower and slower.

--prune makes a database of one scenario out of a copy of the whole setup
(bench/ws/run.sh copies the files while FerretDB is stopped): it deletes
every channel but the first N rooms of each group named (all of the group
without :N), and their messages.  The module looks up a connecting user's
channels with a query on "channels.members"; MongoDB answers it from the
index the module creates, FerretDB's SQLite backend by reading every
channel (0.1 ms each: 2,003 channels made every sign-in take 240 ms).

It talks to 127.0.0.1 only.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

local = threading.local()
args = None


def conn():
    c = getattr(local, "conn", None)
    if c is None:
        u = urllib.parse.urlsplit(args.url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        local.conn = c
    return c


def call(method, path, body=None, token=None, ok=(200, 201)):
    """One request on this thread's keep-alive connection; retries an
    "overloaded" 503 and a dropped connection a few times."""
    data = (None if body is None
            else json.dumps(body, separators=(",", ":")).encode())
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    for attempt in range(20):
        c = conn()
        try:
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
        except (http.client.HTTPException, OSError):
            c.close()
            local.conn = None
            time.sleep(0.2 * (attempt + 1))
            continue
        if r.status == 503:
            time.sleep(0.2 * (attempt + 1))
            continue
        if r.status not in ok:
            raise RuntimeError("%s %s: %d %s"
                               % (method, path, r.status, raw[:300]))
        return json.loads(raw) if raw else None
    raise RuntimeError("%s %s: no answer after retries" % (method, path))


def signup(name):
    """A new account, or a sign-in to the one a previous, interrupted
    setup made (then "existed" is set)."""
    email = name + "@bench.example"
    password = "bench-pass-" + name
    r = call("POST", "/api/auth/signup",
             {"email": email, "password": password, "username": name},
             ok=(201, 409))
    existed = "error" in r
    if existed:
        r = call("POST", "/api/auth/login",
                 {"email": email, "password": password}, ok=(200,))
    return {"name": name, "id": r["user"]["id"], "token": r["token"],
            "email": email, "existed": existed}


# the channels an interrupted setup left, by name: {id, members, last_seq}
made_before = None


def load_made_before():
    """Read once from the database: through the API, each channel listing
    costs a scan of "users" per channel."""
    global made_before
    made = {}
    used = set(bytes(d["channel_id"]) for d in mongo_find(
        args.mongo, "messages", {}, {"channel_id": 1}))
    for d in mongo_find(args.mongo, "channels", {},
                        {"name": 1, "members": 1}):
        made[d.get("name")] = {
            "id": bytes(d["_id"]).hex(),
            "members": [bytes(m).hex() for m in d["members"]],
            "last_seq": 1 if bytes(d["_id"]) in used else 0}
    made_before = made


def existing(user, name):
    """The channel NAME of a user who existed already, or None."""
    if not user["existed"]:
        return None
    if made_before is not None:
        return made_before.get(name)
    for c in call("GET", "/api/channels", token=user["token"]):
        if c["name"] == name:
            return c
    return None


def parallel(fn, items, what, threads=None):
    out = [None] * len(items)
    t0 = time.time()
    done = 0
    with concurrent.futures.ThreadPoolExecutor(threads or args.threads) as ex:
        futs = {ex.submit(fn, it): i for i, it in enumerate(items)}
        for f in concurrent.futures.as_completed(futs):
            out[futs[f]] = f.result()
            done += 1
            if what and (done % max(1, len(items) // 10) == 0
                         or done == len(items)):
                print("setup: %s %d/%d (%.0f s)"
                      % (what, done, len(items), time.time() - t0),
                      file=sys.stderr, flush=True)
    return out


# a minimal MongoDB wire-protocol client (OP_MSG), enough for one update
# and one find: BSON of dicts, lists, strings, ints, booleans and ObjectIds

class Oid(bytes):
    pass


def bson(doc):
    out = b""
    items = doc.items() if isinstance(doc, dict) else \
        ((str(i), v) for i, v in enumerate(doc))
    for k, v in items:
        k = k.encode() + b"\0"
        if isinstance(v, Oid):
            out += b"\x07" + k + bytes(v)
        elif isinstance(v, bool):
            out += b"\x08" + k + (b"\x01" if v else b"\x00")
        elif isinstance(v, int):
            out += b"\x12" + k + struct.pack("<q", v)
        elif isinstance(v, str):
            s = v.encode() + b"\0"
            out += b"\x02" + k + struct.pack("<i", len(s)) + s
        elif isinstance(v, dict):
            out += b"\x03" + k + bson(v)
        elif isinstance(v, list):
            out += b"\x04" + k + bson(v)
        else:
            raise TypeError(type(v))
    return struct.pack("<i", len(out) + 5) + out + b"\0"


def unbson(b, pos=0, array=False):
    end = pos + struct.unpack_from("<i", b, pos)[0] - 1
    pos += 4
    out = [] if array else {}
    while pos < end:
        t = b[pos]
        z = b.index(b"\0", pos + 1)
        k = b[pos + 1:z].decode()
        pos = z + 1
        if t == 0x01:
            v = struct.unpack_from("<d", b, pos)[0]
            pos += 8
        elif t == 0x02:
            n = struct.unpack_from("<i", b, pos)[0]
            v = b[pos + 4:pos + 3 + n].decode()
            pos += 4 + n
        elif t in (0x03, 0x04):
            v = unbson(b, pos, t == 0x04)
            pos += struct.unpack_from("<i", b, pos)[0]
        elif t == 0x07:
            v = Oid(b[pos:pos + 12])
            pos += 12
        elif t == 0x08:
            v = b[pos] == 1
            pos += 1
        elif t == 0x09 or t == 0x12 or t == 0x11:
            v = struct.unpack_from("<q", b, pos)[0]
            pos += 8
        elif t == 0x10:
            v = struct.unpack_from("<i", b, pos)[0]
            pos += 4
        elif t == 0x0a:
            v = None
        else:
            raise ValueError("BSON type %d" % t)
        if array:
            out.append(v)
        else:
            out[k] = v
    return out


def mongo_command(uri, cmd):
    u = urllib.parse.urlsplit(uri)
    if u.hostname != "127.0.0.1":
        sys.exit("setup.py: only mongodb://127.0.0.1:PORT/DB is allowed")
    cmd = dict(cmd)
    cmd["$db"] = u.path.lstrip("/") or "foko_chat"
    body = struct.pack("<I", 0) + b"\0" + bson(cmd)
    msg = struct.pack("<iiii", 16 + len(body), 1, 0, 2013) + body
    with socket.create_connection((u.hostname, u.port), 600) as s:
        s.sendall(msg)
        head = b""
        while len(head) < 16:
            head += s.recv(16 - len(head))
        n = struct.unpack_from("<i", head)[0] - 16
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise RuntimeError("MongoDB closed the connection")
            data += chunk
    reply = unbson(data, 5)
    if reply.get("ok") != 1:
        raise RuntimeError("MongoDB: %s" % reply)
    return reply


def mongo_find(uri, coll, flt, projection):
    r = mongo_command(uri, {"find": coll, "filter": flt,
                            "projection": projection,
                            "batchSize": 1000000})
    docs = list(r["cursor"]["firstBatch"])
    cid = r["cursor"]["id"]
    while cid:
        r = mongo_command(uri, {"getMore": cid, "collection": coll,
                                "batchSize": 1000000})
        docs += r["cursor"]["nextBatch"]
        cid = r["cursor"]["id"]
    return docs


def push_members(uri, channel, members):
    oid = Oid(bytes.fromhex(channel))
    r = mongo_command(uri, {
        "update": "channels",
        "updates": [{"q": {"_id": oid},
                     "u": {"$push": {"members": {
                         "$each": [Oid(bytes.fromhex(m["id"]))
                                   for m in members]}}}}]})
    if r.get("nModified") != 1:
        raise RuntimeError("the channel was not updated: %s" % r)
    r = mongo_command(uri, {"find": "channels", "filter": {"_id": oid}})
    return len(r["cursor"]["firstBatch"][0]["members"])


def create(creator, members, name):
    return call("POST", "/api/channels",
                {"name": name, "members": [m["id"] for m in members]},
                token=creator["token"], ok=(201,))


def prune():
    if not (args.mongo and args.rooms and args.keep):
        sys.exit("setup.py: --prune needs --mongo, --rooms and --keep")
    want = {}
    for k in args.keep.split(","):
        name, _, n = k.partition(":")
        want[name] = int(n) if n else None
    keep, group, left = [], None, 0
    with open(args.rooms) as f:
        for line in f:
            w = line.split()
            if w and w[0] == "group":
                group = w[1] if w[1] in want else None
                left = want.get(group) or int(w[2]) if group else 0
            elif w and w[0] == "room" and group and left > 0:
                keep.append(Oid(bytes.fromhex(w[1])))
                left -= 1
    if not keep:
        sys.exit("setup.py: --keep names no room of %s" % args.rooms)
    r = mongo_command(args.mongo, {
        "delete": "channels",
        "deletes": [{"q": {"_id": {"$nin": keep}}, "limit": 0}]})
    n = r.get("n", 0)
    r = mongo_command(args.mongo, {
        "delete": "messages",
        "deletes": [{"q": {"$or": [{"channel_id": {"$nin": keep}},
                                   {"text": {"$regex": "^t="}}]},
                     "limit": 0}]})
    nm = r.get("n", 0)
    # the users of no channel kept: FerretDB reads them all for an "$in"
    members = set()
    for c in mongo_find(args.mongo, "channels", {}, {"members": 1}):
        members.update(bytes(m) for m in c["members"])
    r = mongo_command(args.mongo, {
        "delete": "users",
        "deletes": [{"q": {"_id": {"$nin": [Oid(m) for m in members]}},
                     "limit": 0}]})
    print("prune: %d channels kept, %d deleted, %d messages and %d users"
          " deleted" % (len(keep), n, nm, r.get("n", 0)), file=sys.stderr)


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--url")
    p.add_argument("--out")
    p.add_argument("--trim", action="store_true",
                   help="only delete the messages ws-load posted")
    p.add_argument("--prune", action="store_true",
                   help="keep only the channels of --keep")
    p.add_argument("--rooms", help="the rooms file, for --prune")
    p.add_argument("--keep", help="GROUP[:N],... for --prune")
    p.add_argument("--big", type=int, default=5000)
    p.add_argument("--room1k", type=int, default=1000)
    p.add_argument("--busy", type=int, default=100)
    p.add_argument("--small-rooms", type=int, default=2000)
    p.add_argument("--small-members", type=int, default=5)
    p.add_argument("--create-max", type=int, default=2400)
    p.add_argument("--threads", type=int, default=8,
                   help="parallel sign-ups")
    p.add_argument("--db-threads", type=int, default=3,
                   help="parallel calls that scan collections")
    p.add_argument("--mongo", help="mongodb://127.0.0.1:PORT/DB: add the big"
                   " room's last members in the database")
    args = p.parse_args()

    if args.prune:
        prune()
        return
    if args.trim:
        # ws-load's messages start with "t=": deleting them keeps the
        # "messages" collection, which FerretDB scans, from growing
        if not args.mongo:
            sys.exit("setup.py: --trim needs --mongo")
        r = mongo_command(args.mongo, {
            "delete": "messages",
            "deletes": [{"q": {"text": {"$regex": "^t="}}, "limit": 0}]})
        print("trim: %d messages deleted" % r.get("n", 0), file=sys.stderr)
        return
    if not args.url or not args.out:
        sys.exit("setup.py: --url and --out are needed")

    u = urllib.parse.urlsplit(args.url)
    if u.scheme != "http" or u.hostname != "127.0.0.1":
        sys.exit("setup.py: only http://127.0.0.1:PORT is allowed")
    if max(args.room1k, args.busy) > args.big:
        sys.exit("setup.py: --room1k and --busy must not exceed --big")

    t0 = time.time()
    def prime(room):
        if len(room) > 2 and room[2]:
            return
        call("POST", "/api/channels/%s/messages" % room[0],
             {"text": "hello"}, token=room[1][0]["token"], ok=(201,))

    # Most calls scan the "users" collection (FerretDB pushes down only
    # "_id" equality), so the small rooms are made batch by batch while
    # their users sign up: sign-ups, then the rooms, then one message in
    # each, which puts the channel in the module's cache.
    if args.mongo:
        load_made_before()
    n = args.small_members
    small, smalls = [], []
    batch = 100
    for first in range(0, args.small_rooms, batch):
        last = min(first + batch, args.small_rooms)
        small += parallel(signup, ["s%d" % i for i in
                                   range(first * n, last * n)], None)

        def mk_small(i):
            m = small[i * n:(i + 1) * n]
            c = existing(m[0], "small%d" % i)
            if c:
                return (c["id"], m, c["last_seq"] > 0)
            return (create(m[0], m[1:], "small%d" % i)["id"], m, False)

        made = parallel(mk_small, list(range(first, last)), None,
                        threads=args.db_threads)
        parallel(prime, made, None, threads=args.db_threads)
        smalls += [(r[0], r[1]) for r in made]
        print("setup: small rooms %d/%d (%.0f s)"
              % (last, args.small_rooms, time.time() - t0),
              file=sys.stderr, flush=True)

    big = parallel(signup, ["b%d" % i for i in range(args.big)],
                   "sign-ups (big)")

    # No message is posted in room5k before its last members are added:
    # the module caches a channel's members when a message goes through
    c = existing(big[0], "room5k") or create(big[0], big[1:args.create_max],
                                             "room5k")
    rest = big[len(c["members"]):]
    if rest and args.mongo:
        got = push_members(args.mongo, c["id"], rest)
        print("setup: room5k: %d members added in the database"
              % len(rest), file=sys.stderr, flush=True)
    elif rest:
        parallel(lambda m: call("POST", "/api/channels/%s/invite" % c["id"],
                                {"email": m["email"]},
                                token=big[0]["token"]),
                 rest, "room5k invitations", threads=args.db_threads)
        got = len(call("GET", "/api/channels/%s" % c["id"],
                       token=big[0]["token"])["members"])
    else:
        got = len(c["members"])
    if got != args.big:
        sys.exit("setup.py: room5k has %d members, expected %d"
                 % (got, args.big))
    r5k = (c["id"], big)

    c = existing(big[0], "room1k") or create(big[0], big[1:args.room1k],
                                             "room1k")
    r1k = (c["id"], big[:args.room1k], c.get("last_seq", 0) > 0)
    c = existing(big[0], "busy") or create(big[0], big[1:args.busy], "busy")
    busy = (c["id"], big[:args.busy], c.get("last_seq", 0) > 0)
    for room in (r5k, r1k, busy):
        prime(room)
    r1k, busy = r1k[:2], busy[:2]

    users = big + small
    groups = [("room1k", [r1k]), ("room5k", [r5k]), ("busy", [busy]),
              ("small", smalls)]
    rooms = [r for _, rs in groups for r in rs]
    with open(args.out + ".tmp", "w") as f:
        for name, rs in groups:
            f.write("group %s %d %d\n" % (name, len(rs), len(rs[0][1])))
            for cid, members in rs:
                f.write("room %s\n" % cid)
                for m in members:
                    f.write("tok %s\n" % m["token"])
    os.rename(args.out + ".tmp", args.out)
    print("setup: %d users, %d rooms in %.0f s"
          % (len(users), len(rooms), time.time() - t0), file=sys.stderr)


if __name__ == "__main__":
    main()
