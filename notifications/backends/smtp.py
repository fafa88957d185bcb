"""Django's SMTP backend with a bound on the whole conversation, for notification emails.

Django's backend bounds each socket operation (EMAIL_TIMEOUT): a conversation of ten slow
replies, or one reply a byte at a time, may take far longer. A send task is interrupted at its
soft time limit, and an interruption after the server took the message would have it sent
again; the bound lets the email task's limits be set above the longest conversation
(notifications.services).

Where a cut falls decides what it costs. Before the DATA command the server has taken nothing,
so the conversation up to there must end DATA_SECONDS before the bound: a slow envelope is cut
there and tried again. The message itself (DATA, its body, the reply to its end, where servers
scan content) then has DATA_SECONDS, each wait up to all of what is left rather than
EMAIL_TIMEOUT: a cut there cannot tell a taken message from one that was not. After the reply
to its end, a cut (the QUIT) leaves the message sent: Django's backend closes the connection.
"""

import io
import smtplib
import time

from django.core.mail.backends import smtp

# The longest one SMTP conversation may take, from connecting to the last reply read.
SMTP_CONVERSATION_SECONDS = 90
# The part of it kept for the message itself: DATA, the body, and the reply to its end.
DATA_SECONDS = 30


class SMTPConversationTimeout(smtplib.SMTPServerDisconnected):
    """The conversation reached its bound; the connection is closed."""


def _seconds(timeout) -> float | None:
    """smtplib's timeout as a number, or None: without EMAIL_TIMEOUT it holds a placeholder object."""
    return timeout if isinstance(timeout, int | float) else None


class _BoundedReader(io.RawIOBase):
    """The connection's socket for reading, every receive waiting only until the deadline: a
    reply dripping in a byte at a time cannot stretch it."""

    def __init__(self, conversation: "_BoundedConversation"):
        self.conversation = conversation

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.conversation.bound_next_wait()
        return self.conversation.sock.recv_into(buffer)


class _BoundedConversation:
    """Mixed into smtplib.SMTP: connecting, every read and every write end by the deadline."""

    def __init__(self, *args, conversation_seconds: float, data_seconds: float, **kwargs):
        self.conversation_seconds = conversation_seconds
        self.data_seconds = data_seconds
        self.ends_at = time.monotonic() + conversation_seconds
        self.deadline = self.ends_at - data_seconds  # until DATA
        self.in_data = False
        super().__init__(*args, **kwargs)

    def _next_timeout(self) -> float:
        """The timeout for the next socket operation; TimeoutError past the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("SMTP conversation bound reached")
        reply_seconds = None if self.in_data else _seconds(self.timeout)
        return left if reply_seconds is None else min(reply_seconds, left)

    def bound_next_wait(self) -> None:
        """Bound the socket's next operation (smtplib closes the connection on any OSError)."""
        self.sock.settimeout(self._next_timeout())

    def _cut(self) -> SMTPConversationTimeout:
        if self.in_data:
            part, seconds = "the message", self.data_seconds
        else:
            part, seconds = "the conversation before the message", self.conversation_seconds - self.data_seconds
        return SMTPConversationTimeout(f"SMTP conversation cut: {part} took more than {seconds:g} s")

    def _bounded(self, operation, *args):
        try:
            return operation(*args)
        except smtplib.SMTPServerDisconnected as error:
            # smtplib reports a timed-out socket as a disconnection; the bound's is named as such.
            if time.monotonic() >= self.deadline:
                raise self._cut() from error
            raise

    def _get_socket(self, host, port, timeout):
        connect = super()._get_socket
        return self._handshake(lambda: connect(host, port, self._next_timeout()))

    def starttls(self, *args, **kwargs):
        start = super().starttls
        return self._handshake(lambda: start(*args, **kwargs))

    def _handshake(self, operation):
        """Connecting and TLS handshakes time out as a bare TimeoutError: the bound's is named."""
        try:
            return operation()
        except TimeoutError as error:
            if time.monotonic() >= self.deadline:
                self.close()
                raise self._cut() from error
            raise

    def send(self, s):
        if self.sock:
            try:
                self.bound_next_wait()
            except TimeoutError as error:
                self.close()
                raise self._cut() from error
        return self._bounded(super().send, s)

    def getreply(self):
        if self.file is None and self.sock is not None:
            self.file = io.BufferedReader(_BoundedReader(self))
        return self._bounded(super().getreply)

    def data(self, msg):
        # Starting the message with less than DATA_SECONDS left could cut it where a taken
        # message cannot be told from one that was not: cut here instead, nothing taken.
        if time.monotonic() >= self.deadline:
            self.close()
            raise self._cut()
        self.in_data = True
        self.deadline = min(time.monotonic() + self.data_seconds, self.ends_at)
        try:
            return super().data(msg)
        finally:
            self.in_data = False
            self.deadline = self.ends_at


class BoundedSMTP(_BoundedConversation, smtplib.SMTP):
    pass


class BoundedSMTPSSL(_BoundedConversation, smtplib.SMTP_SSL):
    pass


class BoundedEmailBackend(smtp.EmailBackend):
    """Django's SMTP backend, each connection's conversation bounded: for one message a
    connection, as notifications send (a second message on it would share the bound)."""

    conversation_seconds = SMTP_CONVERSATION_SECONDS
    data_seconds = DATA_SECONDS

    def open(self):
        try:
            return super().open()
        except BaseException:
            # Django keeps a connection that failed half-way (STARTTLS, AUTH) for its next
            # open(); a backend made for one message has none: close it now.
            if self._partial_connection is not None:
                self._partial_connection.close()
                self._partial_connection = None
            raise

    def _close_connection(self, connection):
        # Only the QUIT is left: the server took the message, whatever it answers now.
        try:
            super()._close_connection(connection)
        except (smtplib.SMTPException, OSError):
            connection.close()

    @property
    def connection_class(self):
        connection_class = BoundedSMTPSSL if self.use_ssl else BoundedSMTP

        def connect(*args, **kwargs):
            return connection_class(
                *args, conversation_seconds=self.conversation_seconds, data_seconds=self.data_seconds, **kwargs
            )

        return connect
