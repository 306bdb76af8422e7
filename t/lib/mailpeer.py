#!/usr/bin/python3
"""Mail peer for the tests: a real SMTP server and a fake SendGrid API.

Usage:
    /usr/bin/python3 t/lib/mailpeer.py --smtp-port P1 --http-port P2
        [--fail-first N] [--slow-seconds S] [--smtp-auth USER:PASSWORD]
        [--print]

"make run" uses it as the development mail catcher: with --print, each
mail's recipient, subject and link are printed on stdout as it arrives.

Needs Debian's python3-aiosmtpd; the rest is the standard library.  Both
servers listen on 127.0.0.1 only.  "ready" is printed on stdout once both
listen; SIGTERM or SIGINT stops the process cleanly.

SMTP (port P1), aiosmtpd: every message is recorded once per recipient.
With --smtp-auth, AUTH PLAIN/LOGIN with those credentials is required
(over plain text: this is a test peer).

HTTP (port P2):
  POST /v3/mail/send   like SendGrid: needs "Authorization: Bearer ...",
                       answers 202 and records the mail, except that
                       - a recipient starting with "fail" gets 500 for its
                         first N requests (--fail-first, default 2; counted
                         per recipient), then 202;
                       - a recipient starting with "slow" gets no answer
                         for --slow-seconds (default 60), then 503;
                       - a recipient starting with "reject" gets 400.
  GET /messages?to=ADDR[&wait=SECONDS]
                       JSON array of the mails delivered to ADDR, oldest
                       first; waits up to SECONDS for at least one.
  GET /attempts?to=ADDR[&min=N&wait=SECONDS]
                       {"to": ADDR, "sendgrid": POSTs seen for ADDR,
                        including failed ones, "smtp": RCPT commands seen};
                       waits up to SECONDS for sendgrid + smtp >= N.

The SMTP server treats recipients alike: "fail" ones get a 451 for their
first N RCPT commands, "slow" ones a silent RCPT for --slow-seconds,
"reject" ones a 550.

A record: {"transport": "smtp" | "sendgrid", "to", "from", "subject",
"text", "link" (the first http(s) URL of the text, or null), "headers"
(all of them, names lowercased; SMTP only), "envelope_from", "rcpt_tos"
(SMTP only), "authorization", "path", "method", "body" (the raw JSON text)
(SendGrid only), "auth_login" (SMTP, with --smtp-auth)}.  Addresses are
compared without case.
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

LINK = re.compile(r"https?://\S+")
MAX_WAIT = 120.0


def first_link(text):
    match = LINK.search(text or "")
    return match.group(0) if match else None


class Mailbox:
    """What both servers saw, shared between their threads."""

    def __init__(self, fail_first, show=False):
        self.fail_first = fail_first
        self.show = show
        self.cond = threading.Condition()
        self.messages = []
        self.attempts = {}
        self.stopping = threading.Event()

    def attempt(self, transport, to):
        """Counts an attempt; returns how many there were for `to` before."""
        key = (transport, to.lower())
        with self.cond:
            seen = self.attempts.get(key, 0)
            self.attempts[key] = seen + 1
            self.cond.notify_all()
        return seen

    def should_fail(self, to, seen):
        return to.lower().startswith("fail") and seen < self.fail_first

    def add(self, record):
        record["link"] = first_link(record.get("text"))
        with self.cond:
            self.messages.append(record)
            self.cond.notify_all()
        if self.show:
            print("mail to %s: %s\n  %s" % (record.get("to"),
                                            record.get("subject"),
                                            record["link"] or "(no link)"),
                  flush=True)

    def _wait(self, predicate, wait):
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        with self.cond:
            while True:
                result = predicate()
                left = deadline - time.monotonic()
                if result[0] or left <= 0 or self.stopping.is_set():
                    return result[1]
                self.cond.wait(min(left, 0.5))

    def messages_for(self, to, wait):
        to = to.lower()

        def found():
            mails = [m for m in self.messages if m["to"].lower() == to]
            return bool(mails), mails

        return self._wait(found, wait)

    def attempts_for(self, to, at_least, wait):
        to = to.lower()

        def counts():
            sendgrid = self.attempts.get(("sendgrid", to), 0)
            smtp = self.attempts.get(("smtp", to), 0)
            result = {"to": to, "sendgrid": sendgrid, "smtp": smtp}
            return sendgrid + smtp >= at_least, result

        return self._wait(counts, wait)


class SmtpHandler:
    def __init__(self, mailbox, slow_seconds):
        self.mailbox = mailbox
        self.slow_seconds = slow_seconds

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        seen = self.mailbox.attempt("smtp", address)
        lower = address.lower()
        if self.mailbox.should_fail(address, seen):
            return "451 4.3.0 Try again later (mailpeer: fail)"
        if lower.startswith("reject"):
            return "550 5.1.1 No such user (mailpeer: reject)"
        if lower.startswith("slow"):
            await asyncio.sleep(self.slow_seconds)
            return "451 4.4.2 Too slow (mailpeer: slow)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content
                                       or envelope.content,
                                       policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        text = text.replace("\r\n", "\n")
        headers = {}
        for name, value in msg.items():
            headers.setdefault(name.lower(), str(value))
        login = None
        if session.authenticated and session.auth_data is not None:
            login = session.auth_data.login.decode("utf-8", "replace")
        for rcpt in envelope.rcpt_tos:
            self.mailbox.add({
                "transport": "smtp",
                "to": rcpt,
                "from": str(msg.get("From", "")),
                "header_to": str(msg.get("To", "")),
                "subject": str(msg.get("Subject", "")),
                "text": text,
                "headers": headers,
                "envelope_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "auth_login": login,
            })
        return "250 Message accepted for delivery"


def make_authenticator(credentials):
    user, _, password = credentials.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login.decode() == user
              and auth_data.password.decode() == password)
        return AuthResult(success=ok, handled=False,
                          auth_data=auth_data if ok else None)

    return authenticate


class HttpHandler(BaseHTTPRequestHandler):
    server_version = "mailpeer"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, status, value, headers=()):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, val in headers:
            self.send_header(name, val)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        mailbox = self.server.mailbox
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        to = query.get("to", [""])[0]
        try:
            wait = float(query.get("wait", ["0"])[0])
            at_least = int(query.get("min", ["1"])[0])
        except ValueError:
            self.send_json(400, {"error": "bad wait or min"})
            return
        if url.path == "/messages" and to:
            self.send_json(200, mailbox.messages_for(to, wait))
        elif url.path == "/attempts" and to:
            self.send_json(200, mailbox.attempts_for(to, at_least, wait))
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self):
        mailbox = self.server.mailbox
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        path = urlsplit(self.path).path
        if path != "/v3/mail/send":
            self.send_json(404, {"errors": [{"message": "not found"}]})
            return
        try:
            body = json.loads(raw)
            to = body["personalizations"][0]["to"][0]["email"]
        except (ValueError, KeyError, IndexError, TypeError):
            self.send_json(400, {"errors": [{"message": "bad JSON body"}]})
            return

        seen = mailbox.attempt("sendgrid", to)
        auth = self.headers.get("Authorization")
        if not auth or not auth.startswith("Bearer "):
            self.send_json(401, {"errors": [{"message": "no API key"}]})
            return
        if mailbox.should_fail(to, seen):
            self.send_json(500, {"errors": [{"message": "mailpeer: fail"}]})
            return
        if to.lower().startswith("slow"):
            mailbox.stopping.wait(self.server.slow_seconds)
            self.close_connection = True
            if not mailbox.stopping.is_set():
                self.send_json(503, {"errors": [{"message": "slow"}]})
            return
        if to.lower().startswith("reject"):
            self.send_json(400, {"errors": [{"message": "rejected"}]})
            return

        text = ""
        for part in body.get("content") or []:
            if part.get("type") == "text/plain":
                text = part.get("value", "")
                break
        mailbox.add({
            "transport": "sendgrid",
            "to": to,
            "from": (body.get("from") or {}).get("email"),
            "subject": body.get("subject"),
            "text": text,
            "authorization": auth,
            "method": self.command,
            "path": self.path,
            "body": raw,
        })
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.send_header("X-Message-Id", "mailpeer-%d" % (seen + 1))
        self.end_headers()


def probe_port(port):
    """Fails at once if the SMTP port is taken (aiosmtpd would take 10 s)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    finally:
        sock.close()


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--fail-first", type=int, default=2)
    parser.add_argument("--slow-seconds", type=float, default=60.0)
    parser.add_argument("--smtp-auth", metavar="USER:PASSWORD")
    parser.add_argument("--print", action="store_true", dest="show",
                        help="print each mail's recipient, subject and link")
    args = parser.parse_args()

    # AUTH without TLS is what --smtp-auth asks for; aiosmtpd warns on it
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")

    mailbox = Mailbox(args.fail_first, args.show)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        httpd = HttpServer(("127.0.0.1", args.http_port), HttpHandler)
        probe_port(args.smtp_port)
    except OSError as e:
        print("mailpeer: cannot listen: %s" % e, file=sys.stderr)
        return 1
    httpd.mailbox = mailbox
    httpd.slow_seconds = args.slow_seconds

    smtp_options = {}
    if args.smtp_auth:
        smtp_options = {
            "auth_required": True,
            "auth_require_tls": False,
            "authenticator": make_authenticator(args.smtp_auth),
        }
    smtp = Controller(SmtpHandler(mailbox, args.slow_seconds),
                      hostname="127.0.0.1", port=args.smtp_port,
                      ready_timeout=10, **smtp_options)
    try:
        smtp.start()
    except Exception as e:
        print("mailpeer: cannot start the SMTP server: %s" % e,
              file=sys.stderr)
        httpd.server_close()
        return 1

    serving = threading.Thread(target=httpd.serve_forever, daemon=True)
    serving.start()

    print("ready", flush=True)

    while not stop.wait(0.5):
        pass

    mailbox.stopping.set()
    with mailbox.cond:
        mailbox.cond.notify_all()
    httpd.shutdown()
    httpd.server_close()
    smtp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
