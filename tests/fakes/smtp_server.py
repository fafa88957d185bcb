"""A real SMTP server on loopback (aiosmtpd) that records what it accepts.

A recipient can be given a script of SMTP replies for RCPT ("451 ...", "550 ..."); the
server records every RCPT, so a test can count attempts. `pauses` makes it slow: seconds to
wait before replying to MAIL, RCPT, DATA (the reply to the message's end) or QUIT.
"""

import asyncio
import email
import email.policy
import socket
import threading
from collections import defaultdict, deque

from aiosmtpd.controller import Controller


class RecordingHandler:
    def __init__(self):
        self.lock = threading.Lock()
        self.messages: list[email.message.EmailMessage] = []
        self.rcpt_log: list[tuple[str, str]] = []
        self.scripts: dict[str, deque] = defaultdict(deque)
        self.pauses: dict[str, float] = {}
        self.quit_reply = "221 Bye"

    async def pause(self, command: str) -> None:
        if self.pauses.get(command):
            await asyncio.sleep(self.pauses[command])

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        await self.pause("MAIL")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await self.pause("RCPT")
        with self.lock:
            reply = self.scripts[address].popleft() if self.scripts[address] else "250 OK"
            self.rcpt_log.append((address, reply))
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        await self.pause("DATA")
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    async def handle_QUIT(self, server, session, envelope):
        await self.pause("QUIT")
        return self.quit_reply


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeSMTP:
    """Stop and start it again to play an SMTP server that is down for a while; it keeps its port."""

    def __init__(self):
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = None

    def start(self) -> "FakeSMTP":
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def script(self, address: str, *replies: str) -> None:
        with self.handler.lock:
            self.handler.scripts[address].extend(replies)

    def delivered(self, to: str) -> list:
        with self.handler.lock:
            return [m for m in self.handler.messages if to in m["To"]]

    def attempts(self, to: str) -> int:
        with self.handler.lock:
            return sum(1 for address, _ in self.handler.rcpt_log if address == to)
