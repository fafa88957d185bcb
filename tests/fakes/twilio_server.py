"""A Twilio-compatible Messages API on loopback, for the real `twilio` library to talk to.

Each recipient can be given a script of answers (201, 429, 500 or (400, <Twilio code>)); the
server records every request, so a test can count what reached the "provider".
"""

import base64
import itertools
import json
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

ERROR_MESSAGES = {
    21211: "The 'To' number is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region.",
    21610: "Attempt to send to unsubscribed recipient.",
    21614: "'To' number is not a valid mobile number.",
    20429: "Too Many Requests",
    30001: "Queue overflow",
}


class FakeTwilio:
    def __init__(self, *, account_sid: str, auth_token: str):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[dict] = []  # every POST that reached us, with the answer given and when (`at`)
        self.default_answer = 201
        self._scripts: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._sids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeTwilio":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

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

    def _answer(self, to: str):
        with self._lock:
            return self._scripts[to].popleft() if self._scripts[to] else self.default_answer

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Twilio's API and the twilio client's session use
            disable_nagle_algorithm = True  # headers and body go out as two writes; don't stall the second

            def log_message(self, *args):
                pass

            def do_POST(self):
                expected_path = f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
                credentials = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {credentials}":
                    return self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
                if self.path != expected_path:
                    return self._json(404, {"code": 20404, "message": "Not found", "status": 404})
                arrived = time.time()
                length = int(self.headers.get("Content-Length", 0))
                form = {key: values[0] for key, values in parse_qs(self.rfile.read(length).decode()).items()}
                answer = fake._answer(form.get("To", ""))
                with fake._lock:
                    fake.requests.append({**form, "answer": answer, "at": arrived})
                if answer == 201:
                    sid = f"SM{next(fake._sids):032x}"
                    return self._json(
                        201, {"sid": sid, "status": "queued", "to": form.get("To"), "body": form.get("Body")}
                    )
                status, code = answer if isinstance(answer, tuple) else (answer, None)
                if code is None and status == 429:
                    code = 20429
                body = {"status": status, "message": ERROR_MESSAGES.get(code, "Internal error"), "more_info": ""}
                if code:
                    body["code"] = code
                return self._json(status, body)

            def _json(self, status: int, body: dict):
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
