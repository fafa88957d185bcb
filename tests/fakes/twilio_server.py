"""A Twilio-compatible Messages API on loopback, for the real `twilio` library to talk to.

Each recipient can be given a script of answers (201, 429, 500, (400, <Twilio code>), or
(status, <code or None>, {header: value}) for an answer with headers such as Retry-After); the
server records every request, so a test can count what reached the "provider".

It serves HTTP/1.1 with keep-alive (as Twilio does and as the twilio client expects) from an
asyncio loop in a thread of its own, over TLS when given a certificate. The benchmarks run it
on the same cores as the workers they measure, so it parses no more of a request than it needs.
"""

import asyncio
import base64
import itertools
import json
import ssl
import threading
import time
from collections import defaultdict, deque
from http import HTTPStatus
from urllib.parse import parse_qs

ERROR_MESSAGES = {
    21211: "The 'To' number is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region.",
    21610: "Attempt to send to unsubscribed recipient.",
    21614: "'To' number is not a valid mobile number.",
    20429: "Too Many Requests",
    30001: "Queue overflow",
}
REASONS = {status.value: status.phrase for status in HTTPStatus}
# Longest request head accepted; the twilio library's is about 400 bytes.
MAX_HEAD_BYTES = 16 * 1024


class FakeTwilio:
    def __init__(self, *, account_sid: str, auth_token: str, certfile: str | None = None):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[dict] = []  # every POST that reached us, with the answer given and when (`at`)
        self.default_answer = 201
        # Called with each accepted request's form before it is answered, in the server's thread:
        # a test's way to change the world while a send waits for its answer.
        self.before_accepting = None
        self._scripts: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._sids = itertools.count(1)
        self._messages_path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._authorization = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._scheme = "https" if certfile else "http"
        tls = None
        if certfile:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(certfile)
        self._loop = asyncio.new_event_loop()
        self._connections: set[asyncio.Transport] = set()
        self._server = self._loop.run_until_complete(
            self._loop.create_server(self._connection, "127.0.0.1", 0, ssl=tls)
        )
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-twilio", daemon=True)

    @property
    def url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def start(self) -> "FakeTwilio":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        else:  # never started
            self._loop.run_until_complete(self._close())
        self._loop.close()

    def script(self, to: str, *answers) -> None:
        """Answer the next requests for `to` with these, in order; then the default (201)."""
        with self._lock:
            self._scripts[to].extend(answers)

    def accepted(self, to: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["answer"] == 201 and (to is None or r["To"] == to)]

    def received(self, to: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["To"] == to]

    async def _close(self) -> None:
        self._server.close()
        for transport in list(self._connections):  # keep-alive connections outlive the listener
            transport.abort()  # at once: a TLS close would wait for the client's answer
        await self._server.wait_closed()

    def _connection(self) -> asyncio.Protocol:
        return _Connection(self)

    def _answer_request(
        self, method: str, path: str, headers: dict, body: bytes, arrived: float
    ) -> tuple[int, dict, dict]:
        if headers.get("authorization") != self._authorization:
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}, {}
        if method != "POST" or path != self._messages_path:
            return 404, {"code": 20404, "message": "Not found", "status": 404}, {}
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        with self._lock:
            to = form.get("To", "")
            answer = self._scripts[to].popleft() if self._scripts[to] else self.default_answer
            sid = f"SM{next(self._sids):032x}" if answer == 201 else None
            self.requests.append({**form, "answer": answer, "at": arrived, "sid": sid})
        if answer == 201:
            if self.before_accepting is not None:
                self.before_accepting(form)
            return 201, {"sid": sid, "status": "queued", "to": form.get("To"), "body": form.get("Body")}, {}
        status, code, extra_headers = (*answer, {})[:3] if isinstance(answer, tuple) else (answer, None, {})
        if code is None and status == 429:
            code = 20429
        error = {"status": status, "message": ERROR_MESSAGES.get(code, "Internal error"), "more_info": ""}
        if code:
            error["code"] = code
        return status, error, extra_headers


class _Connection(asyncio.Protocol):
    """One client connection: requests are answered in order as their bytes arrive."""

    def __init__(self, fake: FakeTwilio):
        self.fake = fake
        self.transport = None
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.fake._connections.add(transport)

    def connection_lost(self, exc) -> None:
        self.fake._connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self.transport.close()
                return
            try:
                request_line, *header_lines = self.buffer[:head_end].decode("latin-1").split("\r\n")
                method, path, version = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
            except ValueError:  # not HTTP: drop the connection
                self.transport.close()
                return
            if "transfer-encoding" in headers:  # the twilio client always sends a Content-Length
                self._answer(411, {"code": 411, "message": "Length Required", "status": 411}, close=True)
                return
            body_end = head_end + 4 + length
            if len(self.buffer) < body_end:
                return  # the body is still on its way
            body, self.buffer = self.buffer[head_end + 4 : body_end], self.buffer[body_end:]
            try:
                status, answer, extra_headers = self.fake._answer_request(method, path, headers, body, time.time())
            except Exception as error:  # a fault of the double itself: answer it rather than hang the client
                status, answer, extra_headers = 500, {"status": 500, "message": f"test server error: {error!r}"}, {}
            closing = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            self._answer(status, answer, close=closing, headers=extra_headers)

    def _answer(self, status: int, answer: dict, *, close: bool, headers: dict | None = None) -> None:
        payload = json.dumps(answer).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.transport.write(
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        if close:
            self.transport.close()
