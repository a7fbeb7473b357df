"""A loopback HTTP proxy in front of the S3 server that breaks uploads on purpose.

Each image PUT (``*.png``) of a key it has not seen is broken once, the kind going
round in turn: a 503 (the store is overloaded), a reset connection (no reply, nothing
written), and a lost reply (the object *is* written, then the connection drops before
the answer). Every other request, and the retry of a broken PUT, is passed through.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

Fault = Literal["503", "reset", "lost-reply"]
FAULTS: tuple[Fault, ...] = ("503", "reset", "lost-reply")
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class FaultProxy:
    """The proxy, listening on 127.0.0.1; ``url`` is its endpoint, ``faults`` what it did."""

    def __init__(self, upstream: str, *, down: bool = False) -> None:
        target = urlsplit(upstream)
        self.down = down  # every image PUT answered 503, however often it is tried
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.faults: Counter[Fault] = Counter()
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test output stays readable."""

            def do_GET(self) -> None:
                proxy.handle(self)

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The proxy's endpoint (give it as AWS_ENDPOINT_URL)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        """Stop listening."""
        self.server.shutdown()
        self.server.server_close()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        if method != "PUT" or not urlsplit(path).path.endswith(".png"):
            return None
        with self.lock:
            if self.down:
                self.faults["503"] += 1
                return "503"
            if path in self.seen:
                return None
            self.seen.add(path)
            fault = FAULTS[len(self.seen) % len(FAULTS)]
            self.faults[fault] += 1
            return fault

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        """Forward one request, breaking it as ``_fault_for`` says."""
        body = _read_body(request)
        fault = self._fault_for(request.command, request.path)
        if fault == "503":
            text = (b"<?xml version='1.0'?><Error><Code>ServiceUnavailable</Code>"
                    b"<Message>try again</Message></Error>")
            request.send_response(503)
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(text)))
            request.end_headers()
            request.wfile.write(text)
            return
        if fault == "reset":
            _reset(request)
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in ("connection", "keep-alive", "proxy-connection")}
            upstream.request(request.command, request.path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
        finally:
            upstream.close()
        if fault == "lost-reply":
            _reset(request)  # written upstream; the answer never arrives
            return
        request.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in _HOP and name.lower() != "content-length":
                request.send_header(name, value)
        # A HEAD reply's length is the object's, not that of its (empty) body.
        length = reply.getheader("Content-Length", "0") if request.command == "HEAD" \
            else str(len(data))
        request.send_header("Content-Length", length)
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    """The request's body as sent (a chunked one kept chunked, trailers and all)."""
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        raw = b""
        while True:
            line = request.rfile.readline()
            raw += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:
                    trailer = request.rfile.readline()
                    raw += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return raw
            raw += request.rfile.read(size + 2)
    length = int(request.headers.get("Content-Length") or 0)
    return request.rfile.read(length) if length else b""


def _reset(request: BaseHTTPRequestHandler) -> None:
    """Drop the connection with a TCP reset, no reply."""
    connection: socket.socket = request.connection
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.close_connection = True
    connection.close()
