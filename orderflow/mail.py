"""Django's SMTP backend with one bound on a whole conversation.

Django's backend bounds each wait for the server (EMAIL_TIMEOUT), so a conversation of ten
slow replies may take ten times that. A send task is interrupted at its soft time limit, and
an interruption after the server took the message would have it sent again; a bound on the
whole conversation lets the task's limits be set above it (notifications.services).

Past the bound every further read or write fails as a disconnection: before the server's reply
to the message's end, the message was not taken and the send is tried again; after it (the
QUIT), Django's backend closes the connection and the message counts as sent.
"""

import smtplib
import time

from django.core.mail.backends import smtp

# The longest one SMTP conversation may take, from connecting to the last reply read.
SMTP_CONVERSATION_SECONDS = 90


class SMTPConversationTimeout(smtplib.SMTPServerDisconnected):
    """The conversation reached its bound; the connection is closed."""


class _BoundedConversation:
    """Mixed into smtplib.SMTP: every read and write waits at most until the deadline."""

    def __init__(self, *args, conversation_seconds: float, **kwargs):
        self.conversation_seconds = conversation_seconds
        self.deadline = time.monotonic() + conversation_seconds
        super().__init__(*args, **kwargs)

    def _bound_next_wait(self) -> None:
        if not self.sock:
            return  # not connected: smtplib raises its own error
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.close()
            raise self._timeout()
        self.sock.settimeout(left if self.timeout is None else min(self.timeout, left))

    def _timeout(self) -> SMTPConversationTimeout:
        return SMTPConversationTimeout(f"SMTP conversation cut after {self.conversation_seconds:g} s")

    def _bounded(self, operation, *args):
        self._bound_next_wait()
        try:
            return operation(*args)
        except smtplib.SMTPServerDisconnected as error:
            # smtplib reports a socket timeout as a disconnection; the bound's is named as such.
            if time.monotonic() >= self.deadline and not isinstance(error, SMTPConversationTimeout):
                raise self._timeout() from error
            raise

    def send(self, s):
        return self._bounded(super().send, s)

    def getreply(self):
        return self._bounded(super().getreply)


class BoundedSMTP(_BoundedConversation, smtplib.SMTP):
    pass


class BoundedSMTPSSL(_BoundedConversation, smtplib.SMTP_SSL):
    pass


class EmailBackend(smtp.EmailBackend):
    """Django's SMTP backend (EMAIL_URL smtp://), each conversation cut at SMTP_CONVERSATION_SECONDS."""

    conversation_seconds = SMTP_CONVERSATION_SECONDS

    @property
    def connection_class(self):
        connection_class = BoundedSMTPSSL if self.use_ssl else BoundedSMTP

        def connect(*args, **kwargs):
            return connection_class(*args, conversation_seconds=self.conversation_seconds, **kwargs)

        return connect
