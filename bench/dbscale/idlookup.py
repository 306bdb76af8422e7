#!/usr/bin/python3
# Lookups, updates and deletes by _id in one collection of N documents,
# for each FerretDB binary given, one after the other on a fresh data
# directory each (SQLite handler, 127.0.0.1).  What the _id expression of
# scripts/lib.sh's FerretDB build changes (bench/README.md, "dbscale").
#
#   bench/dbscale/idlookup.py [--n 1000000] [--samples 30] BINARY...
#
# Prints one line per operation and binary, medians and p99 in ms.

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from bson import ObjectId
from pymongo import MongoClient


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def timed(fn, samples, budget):
    ts = []
    start = time.monotonic()
    for i in range(samples):
        t = time.perf_counter()
        fn(i)
        ts.append((time.perf_counter() - t) * 1000)
        if time.monotonic() - start > budget:
            break
    ts.sort()
    return statistics.median(ts), ts[int(0.99 * (len(ts) - 1) + 0.5)], len(ts)


def run(binary, n, samples, budget):
    tmp = tempfile.mkdtemp(prefix='idlookup-')
    port = free_port()
    log = open(os.path.join(tmp, 'ferretdb.log'), 'w')
    proc = subprocess.Popen([binary, '--handler=sqlite',
                             '--sqlite-url=file:%s/' % tmp,
                             '--listen-addr=127.0.0.1:%d' % port,
                             '--telemetry=disable', '--log-level=error'],
                            stdout=log, stderr=log)
    try:
        cli = MongoClient('mongodb://127.0.0.1:%d/' % port,
                          serverSelectionTimeoutMS=10000,
                          socketTimeoutMS=120000)
        c = cli['bench']['messages']
        t0 = time.monotonic()
        for b in range(0, n, 10000):
            # a third each with a string, an ObjectId and an int _id
            c.insert_many([{
                '_id': ('m%07d' % i) if i % 3 == 0 else
                       ObjectId(b'%012d' % i) if i % 3 == 1 else i,
                'channel_id': i % 1000, 'seq': i // 1000,
                'text': 'hello world message body %d' % i,
            } for i in range(b, min(b + 10000, n))], ordered=False)
        print('%s: %d documents in %.1f s' % (os.path.basename(binary), n,
                                               time.monotonic() - t0))
        pick = lambda k: random.randrange(k, n - 3, 3)
        ops = [
            ('find_one {_id: string}',
             lambda i: c.find_one({'_id': 'm%07d' % pick(0)})),
            ('find_one {_id: ObjectId}',
             lambda i: c.find_one({'_id': ObjectId(b'%012d' % pick(1))})),
            ('find_one {_id} that is not there',
             lambda i: c.find_one({'_id': 'none-%d' % i})),
            ('update_one {_id: string} $set',
             lambda i: c.update_one({'_id': 'm%07d' % pick(0)},
                                    {'$set': {'edited': i}})),
            ('delete_one {_id: string}',
             lambda i: c.delete_one({'_id': 'm%07d' % pick(0)})),
        ]
        for name, fn in ops:
            p50, p99, k = timed(fn, samples, budget)
            print('  %-36s n=%-3d p50 %9.2f ms  p99 %9.2f ms' % (name, k, p50,
                                                                   p99))
            sys.stdout.flush()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=1000000)
    ap.add_argument('--samples', type=int, default=30)
    ap.add_argument('--budget', type=float, default=60,
                    help='seconds per operation at most')
    ap.add_argument('binary', nargs='+')
    a = ap.parse_args()
    for b in a.binary:
        run(b, a.n, a.samples, a.budget)


main()
