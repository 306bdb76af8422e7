#!/usr/bin/env python3
"""N sign-ups, then N sign-ins of the same accounts, C at a time, against
the module on 127.0.0.1:PORT; prints the worker's VmRSS (KiB) before, after
the sign-ups and after the sign-ins, and the seconds of each phase, as one
JSON line."""

import argparse
import concurrent.futures
import json
import random
import time
import urllib.request


def vmrss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def post(port, path, body):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as res:
        return res.status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()

    tag = random.getrandbits(40)
    accounts = [{"email": f"h{tag}x{i}@example.com",
                 "password": "correct horse battery",
                 "username": f"h{i}"} for i in range(a.count)]

    out = {"count": a.count, "clients": a.clients,
           "rss_start_kib": vmrss(a.worker)}

    with concurrent.futures.ThreadPoolExecutor(a.clients) as pool:
        t0 = time.monotonic()
        codes = list(pool.map(
            lambda b: post(a.port, "/api/auth/signup", b), accounts))
        assert codes == [201] * a.count, codes
        out["rss_signups_kib"] = vmrss(a.worker)
        t1 = time.monotonic()

        codes = list(pool.map(
            lambda b: post(a.port, "/api/auth/login",
                           {"email": b["email"],
                            "password": b["password"]}), accounts))
        assert codes == [200] * a.count, codes
        out["rss_signins_kib"] = vmrss(a.worker)
        out["signups_s"] = round(t1 - t0, 2)
        out["signins_s"] = round(time.monotonic() - t1, 2)

    print(json.dumps(out))


if __name__ == "__main__":
    main()
