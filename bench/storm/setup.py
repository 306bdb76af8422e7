#!/usr/bin/python3
"""Users and channels for bench/storm, on an empty database that nginx with
the module serves (it has created its indexes).

    setup.py --port NGINX_PORT --mongo URI --secret S --clients N
             [--per-channel 100] --out plan.txt

One account is signed up through the REST API; its argon2 hash is shared
by the N accounts bulk-inserted next (documents as the module writes
them, see bench/dbscale/foko.py), in N / per-channel group channels of
per-channel members.  One message is posted to each channel through the
API, so that every channel is in the zone when the clients connect, as on
a running server.  The plan, read by storm.c:

    ch CHANNEL_ID POSTER_TOKEN      (the poster is the channel's first member)
    u CHANNEL_INDEX TOKEN           (one line per client)
"""
import argparse
import os
import sys

import pymongo
from bson import ObjectId

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "dbscale"))
import foko  # noqa: E402
import gen   # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mongo", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--per-channel", type=int, default=100)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if not a.mongo.startswith("mongodb://127.0.0.1:"):
        sys.exit("setup.py: only mongodb://127.0.0.1:PORT/DB is allowed")
    db = pymongo.MongoClient(a.mongo).get_default_database()
    import time
    gen.wait_indexes(db, time.monotonic() + 60)
    api = foko.Http(a.port)
    st, r, _ = api.call("POST", "/api/auth/signup", {
        "email": "ref@bench.test", "password": "bench password",
        "username": "ref"})
    if st != 201:
        sys.exit("setup.py: signup answered %d %r" % (st, r))
    pw_hash = db.users.find_one({"_id": ObjectId(r["user"]["id"])})["hash"]
    created = foko.now_date()
    uids = [ObjectId() for _ in range(a.clients)]
    db.users.insert_many([foko.user_doc(uids[i], i, pw_hash, created)
                          for i in range(a.clients)], ordered=False)
    nch = (a.clients + a.per_channel - 1) // a.per_channel
    cids = [ObjectId() for _ in range(nch)]
    db.channels.insert_many([
        foko.channel_doc(cids[c], "storm%d" % c,
                         uids[c * a.per_channel:(c + 1) * a.per_channel],
                         created) for c in range(nch)], ordered=False)
    toks = [foko.mint_token(a.secret, uids[i], "u%d" % i)
            for i in range(a.clients)]
    with open(a.out, "w") as f:
        for c in range(nch):
            tok = toks[c * a.per_channel]
            st, r, _ = api.call("POST", "/api/channels/%s/messages" % cids[c],
                                {"text": "seed", "client_id": "seed"}, tok)
            if st != 201:
                sys.exit("setup.py: seed post answered %d %r" % (st, r))
            f.write("ch %s %s\n" % (cids[c], tok))
        for i in range(a.clients):
            f.write("u %d %s\n" % (i // a.per_channel, toks[i]))


if __name__ == "__main__":
    main()
