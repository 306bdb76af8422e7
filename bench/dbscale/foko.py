"""Small clients shared by bench/dbscale and bench/storm: HTTP/1.1 keep-alive
JSON calls, a blocking WebSocket client, access tokens and the module's
document shapes.  Loopback only.

The documents are those of ngx_foko_chat_store*.c:

    users     {_id, email, username, username_key (lowercased), hash,
               ver: int64, created: date}
    channels  {_id, name, direct: false, members: [oid], created: date}
    messages  {_id, channel_id, seq: int64, author_id, author_name, text,
               created: date, client_id?}
    reads     {_id, channel_id, user_id, seq: int64}

Access tokens are HS256 JWTs with the claims the module issues
(ngx_foko_chat_jwt_issue(): typ "access", sub, name, iat, exp, ver).
"""

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import socket
import struct
import time

from bson import Int64, ObjectId


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def mint_token(secret, uid, name, ver=0, ttl=86400 * 2):
    """An access token the module accepts (same claims as its own)."""
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"},
                             separators=(",", ":")).encode())
    body = b64url(json.dumps({"exp": now + ttl, "iat": now, "name": name,
                              "sub": str(uid), "typ": "access", "ver": ver},
                             separators=(",", ":"), sort_keys=True).encode())
    sig = b64url(hmac.new(secret.encode(), head + b"." + body,
                          hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def check_loopback(host):
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit("only 127.0.0.1 is allowed")


class Http:
    """One keep-alive connection; call() returns (status, json, seconds)."""

    def __init__(self, port, timeout=600):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def call(self, method, path, body=None, token=None, timeout=None):
        headers = {}
        if token:
            headers["Authorization"] = "Bearer " + token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=timeout or self.timeout)
            elif timeout:
                self.conn.timeout = timeout
                if self.conn.sock:
                    self.conn.sock.settimeout(timeout)
            t0 = time.monotonic()
            try:
                self.conn.request(method, path, data, headers)
                r = self.conn.getresponse()
                raw = r.read()
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.BadStatusLine):
                self.close()
                if attempt:
                    raise
                continue
            except socket.timeout:
                self.close()
                raise
            dt = time.monotonic() - t0
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = raw
            return r.status, doc, dt

    def close(self):
        if self.conn:
            self.conn.close()
        self.conn = None


class Ws:
    """A blocking WebSocket client, enough for auth -> ready."""

    def __init__(self, port, timeout=600):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n" % key).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(4096)
            if not d:
                raise ConnectionError("closed during the upgrade")
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError("upgrade refused: %r" % head[:40])

    def send(self, obj):
        data = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
        self.sock.sendall(hdr + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("closed")
            self.buf += d

    def recv(self):
        """The next text message as an object; a close raises."""
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n = b1 & 0x7F
            off = 2
            if n == 126:
                self._need(4)
                n = struct.unpack("!H", self.buf[2:4])[0]
                off = 4
            elif n == 127:
                self._need(10)
                n = struct.unpack("!Q", self.buf[2:10])[0]
                off = 10
            self._need(off + n)
            payload = self.buf[off:off + n]
            self.buf = self.buf[off + n:]
            op = b0 & 0x0F
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if n >= 2 else 0
                raise ConnectionError("closed by the server: %d" % code)
            if op == 1:
                return json.loads(payload)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def ws_signin(port, token, timeout):
    """Seconds from sending auth to ready, and the ready message."""
    ws = Ws(port, timeout)
    try:
        t0 = time.monotonic()
        ws.send({"type": "auth", "token": token})
        while True:
            m = ws.recv()
            if m.get("type") == "ready":
                return time.monotonic() - t0, m
    finally:
        ws.close()


def now_date():
    return datetime.datetime.now(datetime.timezone.utc).replace(
        microsecond=0)


def user_doc(oid, i, pw_hash, created):
    return {"_id": oid, "email": "u%d@bench.test" % i, "username": "u%d" % i,
            "username_key": "u%d" % i, "hash": pw_hash, "ver": Int64(0),
            "created": created}


def channel_doc(oid, name, members, created):
    return {"_id": oid, "name": name, "direct": False,
            "members": list(members), "created": created}


def message_doc(oid, channel, seq, author, author_name, text, created,
                client_id=None):
    d = {"_id": oid, "channel_id": channel, "seq": Int64(seq),
         "author_id": author, "author_name": author_name, "text": text,
         "created": created}
    if client_id is not None:
        d["client_id"] = client_id
    return d


def read_doc(channel, user, seq):
    return {"_id": ObjectId(), "channel_id": channel, "user_id": user,
            "seq": Int64(seq)}


def shape(doc):
    """Field names and BSON types, to compare with a document the module
    wrote."""
    return sorted((k, type(v).__name__) for k, v in doc.items())


def quantile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[i]
