#!/usr/bin/env python3
"""Opens N idle WebSocket connections to 127.0.0.1 and reports how much
the nginx worker's resident memory grew.

    idle.py --port P --path /ws --count N --worker PID [--token T]
            [--warm W] [--hold S]

With --token each connection signs in ({"type":"auth"}) and waits for the
module's "ready"; without it (nchan) each waits for the 101 only.  The
connections are opened one after the other (each sends its token without
waiting for the others' "ready", as clients coming back after a restart
do), then held for --hold seconds.  With --warm, W connections are opened
the same way and closed before the measurement starts, so that what the
server sets up once (its storage threads and their MongoDB clients) is not
counted per connection.  Prints one JSON line.  Talks to 127.0.0.1 only."""

import argparse
import base64
import json
import os
import socket
import struct
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def text_frame(payload):
    data = payload.encode()
    mask = os.urandom(4)
    if len(data) < 126:
        head = bytes([0x81, 0x80 | len(data)])
    else:
        head = bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(data))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def open_all(a, count):
    """count connections, upgraded (and ready with --token)"""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("closed during the upgrade")
            buf += chunk
        if b" 101 " not in buf.split(b"\r\n", 1)[0]:
            raise RuntimeError("no 101: %r" % buf[:80])
        if a.token:
            s.sendall(text_frame(json.dumps({"type": "auth",
                                             "token": a.token})))
        socks.append((s, buf.split(b"\r\n\r\n", 1)[1]))

    for s, rest in socks:
        data = rest
        while a.token and b'"ready"' not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("closed before ready")
            data += chunk

    return socks


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/ws")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--worker", type=int, required=True)
    p.add_argument("--token")
    p.add_argument("--warm", type=int, default=0)
    p.add_argument("--hold", type=float, default=0)
    a = p.parse_args()

    if a.warm:
        for s, _ in open_all(a, a.warm):
            s.close()
        time.sleep(2)

    time.sleep(1)
    before = rss(a.worker)
    socks = open_all(a, a.count)

    time.sleep(2)
    after = rss(a.worker)
    print(json.dumps({"connections": a.count, "warm": a.warm,
                      "rss_before": before, "rss_after": after,
                      "bytes_per_connection":
                          round((after - before) / a.count)}), flush=True)
    time.sleep(a.hold)
    for s, _ in socks:
        s.close()


if __name__ == "__main__":
    main()
