#!/usr/bin/python3
"""The dbscale dataset: the module's own documents at a given size.

    gen.py --port NGINX_PORT --mongo mongodb://127.0.0.1:PORT/DB
           --messages N --out plan.json [--users 10000] [--channels 2000]
           [--seed 1]

nginx with the module must be running on the (empty) database: it creates
its indexes when it finds MongoDB up, and this script waits for them.  A
small part goes through the REST API: one account (whose argon2 hash every
generated account shares, password "bench password"), one channel and a
few messages and read marks, whose documents are compared, field by field
and type by type, with the generated ones (the script stops if they
differ).  The rest is bulk-inserted (insert_many of 1000, unordered) with
the same shapes:

  users      --users accounts u0..u{n-1}
  channels   --channels group channels of 5-100 members, created in
             order; the first 1000 get messages
  messages   half in channel 0 ("big"), the other half spread evenly over
             channels 1..999; seq 1..n per channel, 100-byte texts, 90%
             with a client_id, authors among the members
  reads      read marks for 70% of the memberships of channels with
             messages, at a random seq

Special users: u0 is in exactly 20 channels (0..19, so it is in "big"),
with read marks in 14 of them, some messages behind; u1..u5 are each in
20 channels of their own (900..999) that nothing else touches before their
cold sign-in.  No other special user is in any other channel.

The plan (ids, tokens, seqs of the channels used by measure.py) goes to
--out.  Tokens are minted with the secret of the stack (--secret).
"""

import argparse
import json
import random
import sys
import time

import pymongo
from bson import ObjectId

import foko

SPECIAL = 6          # u0 .. u5
LIST_CHANNELS = 20
COLD_USERS = 5
COLD_BASE = 900


def wait_indexes(db, deadline):
    want = {"messages": {"channel_seq_unique", "author_client_unique"},
            "channels": {"members", "direct_key_unique"},
            "reads": {"user_channel_unique"},
            "users": {"email_unique", "username"}}
    while True:
        have = {}
        try:
            for c in want:
                have[c] = set(i["name"] for i in db[c].list_indexes())
        except pymongo.errors.PyMongoError:
            pass
        if all(want[c] <= have.get(c, set()) for c in want):
            return
        if time.monotonic() > deadline:
            sys.exit("gen.py: the module did not create its indexes: %r"
                     % have)
        time.sleep(0.2)


def insert(coll, docs, stats, batch=1000):
    t0 = time.monotonic()
    for i in range(0, len(docs), batch):
        coll.insert_many(docs[i:i + batch], ordered=False)
    stats[coll.name] = stats.get(coll.name, 0) + time.monotonic() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mongo", required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--channels", type=int, default=2000)
    p.add_argument("--secret", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    if not args.mongo.startswith("mongodb://127.0.0.1:"):
        sys.exit("gen.py: only mongodb://127.0.0.1:PORT/DB is allowed")
    rnd = random.Random(args.seed)
    t_start = time.monotonic()
    client = pymongo.MongoClient(args.mongo)
    db = client.get_default_database()
    wait_indexes(db, time.monotonic() + 60)

    # ------------------------------------------------ the API part
    api = foko.Http(args.port)
    st, r, _ = api.call("POST", "/api/auth/signup", {
        "email": "ref@bench.test", "password": "bench password",
        "username": "ref"})
    if st != 201:
        sys.exit("gen.py: signup answered %d %r" % (st, r))
    ref_tok = r["token"]
    ref_id = ObjectId(r["user"]["id"])
    st, ch, _ = api.call("POST", "/api/channels",
                         {"name": "ref", "members": []}, ref_tok)
    if st != 201:
        sys.exit("gen.py: channel answered %d %r" % (st, ch))
    for i in range(3):
        st, r, _ = api.call("POST", "/api/channels/%s/messages" % ch["id"],
                            {"text": "ref %d" % i, "client_id": "ref-%d" % i},
                            ref_tok)
        if st != 201:
            sys.exit("gen.py: post answered %d %r" % (st, r))
    api.call("POST", "/api/channels/%s/read" % ch["id"], {"seq": 2}, ref_tok)
    ref_user = db.users.find_one({"_id": ref_id})
    ref_channel = db.channels.find_one({"_id": ObjectId(ch["id"])})
    ref_msg = db.messages.find_one({"channel_id": ObjectId(ch["id"]),
                                    "seq": 1})
    ref_read = db.reads.find_one({"user_id": ref_id})
    pw_hash = ref_user["hash"]
    t_api = time.monotonic() - t_start

    # ------------------------------------------------ the bulk part
    created = foko.now_date()
    nu = args.users
    uids = [ObjectId() for _ in range(nu)]
    users = [foko.user_doc(uids[i], i, pw_hash, created) for i in range(nu)]

    ordinary = list(range(SPECIAL, nu))
    members = []
    for c in range(args.channels):
        k = rnd.randint(5, 100)
        m = rnd.sample(ordinary, k - 1 if c < LIST_CHANNELS else k)
        if c < LIST_CHANNELS:
            m = [0] + m
        if COLD_BASE <= c < COLD_BASE + COLD_USERS * LIST_CHANNELS:
            m = [1 + (c - COLD_BASE) // LIST_CHANNELS] + m[1:]
        members.append(m)
    cids = [ObjectId() for _ in range(args.channels)]
    channels = [foko.channel_doc(cids[c], "c%d" % c,
                                 [uids[u] for u in members[c]], created)
                for c in range(args.channels)]

    with_msgs = min(1000, args.channels)
    big = args.messages // 2
    counts = [0] * with_msgs
    counts[0] = big
    rest = args.messages - big
    for c in range(1, with_msgs):
        counts[c] = rest // (with_msgs - 1)
    for c in range(1, 1 + rest % (with_msgs - 1)):
        counts[c] += 1

    text = ("lorem ipsum dolor sit amet, consectetur adipiscing elit, sed "
            "do eiusmod tempor incididunt ut labore ")[:100]
    stats = {}
    insert(db.users, users, stats)
    insert(db.channels, channels, stats)

    # messages: generated and inserted in slices, so 1M fits in memory
    t0_ms = int(time.time() * 1000) - args.messages - 1000
    tick = 0
    slice_docs = []

    def flush():
        if slice_docs:
            insert(db.messages, slice_docs, stats)
            slice_docs.clear()

    for c in range(with_msgs):
        mem = members[c]
        for s in range(1, counts[c] + 1):
            a = mem[rnd.randrange(len(mem))]
            tick += 1
            cid_ = ("g%d-%d" % (c, s)) if rnd.random() < 0.9 else None
            slice_docs.append(foko.message_doc(
                ObjectId(), cids[c], s, uids[a], "u%d" % a, text,
                _date(t0_ms + tick), cid_))
            if len(slice_docs) >= 50000:
                flush()
    flush()

    reads = []
    list_reads = {}
    for c in range(with_msgs):
        for u in members[c]:
            if counts[c] == 0:
                continue
            if u == 0:
                if c % 10 < 7:        # 14 of u0's 20 channels
                    s = max(0, counts[c] - rnd.randint(0, 30))
                    reads.append(foko.read_doc(cids[c], uids[u], s))
                    list_reads[c] = s
                continue
            if u < SPECIAL:
                continue
            if rnd.random() < 0.7:
                reads.append(foko.read_doc(cids[c], uids[u],
                                           rnd.randint(0, counts[c])))
    insert(db.reads, reads, stats)
    t_total = time.monotonic() - t_start

    # ------------------------------------------------ the shapes agree
    gen = {"users": users[0], "channels": channels[0],
           "messages": db.messages.find_one({"channel_id": cids[1],
                                             "client_id": {"$exists": True}}),
           "reads": reads[0]}
    ref = {"users": ref_user, "channels": ref_channel, "messages": ref_msg,
           "reads": ref_read}
    for name in gen:
        a = foko.shape(db[name].find_one({"_id": gen[name]["_id"]}))
        b = foko.shape(ref[name])
        if a != b:
            sys.exit("gen.py: %s differs from the module's: %r against %r"
                     % (name, a, b))

    def tok(u):
        return foko.mint_token(args.secret, uids[u], "u%d" % u)

    st, me, _ = api.call("GET", "/api/me", token=tok(0))
    if st != 200 or me["user"]["id"] != str(uids[0]):
        sys.exit("gen.py: a minted token was refused: %d %r" % (st, me))

    plan = {
        "messages": args.messages,
        "users": nu, "channels": args.channels,
        "stored": {n: db[n].estimated_document_count()
                   for n in ("users", "channels", "messages", "reads")},
        "seconds": {"api": round(t_api, 2), "total": round(t_total, 2),
                    "insert": {k: round(v, 2) for k, v in stats.items()}},
        "docs_per_s": round((nu + args.channels + args.messages
                             + len(reads)) / max(0.001, t_total - t_api)),
        "big": {"id": str(cids[0]), "count": counts[0]},
        "u0": {"id": str(uids[0]), "token": tok(0),
               "channels": [str(cids[c]) for c in range(LIST_CHANNELS)],
               "reads": len(list_reads)},
        "cold_users": [{"id": str(uids[u]), "token": tok(u)}
                       for u in range(1, 1 + COLD_USERS)],
        # channels with messages that only posts and pages touch, each
        # with a member's token: for cold posts and cold newest pages
        "spare": [{"id": str(cids[c]), "count": counts[c],
                   "token": tok(members[c][-1])}
                  for c in range(LIST_CHANNELS, COLD_BASE)][:200],
    }
    with open(args.out, "w") as f:
        json.dump(plan, f, indent=1)
    print("generated %d messages (%s) in %.1f s, %d docs/s"
          % (args.messages, plan["stored"], t_total, plan["docs_per_s"]),
          file=sys.stderr)


def _date(ms):
    import datetime
    return datetime.datetime.fromtimestamp(ms / 1000.0,
                                           datetime.timezone.utc)


if __name__ == "__main__":
    main()
