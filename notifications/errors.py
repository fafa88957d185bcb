"""How a failed send is classified. Backends translate their provider's errors into these;
the pipeline decides from the class alone whether to retry or to give up."""

# The error-code columns' length. A provider's own code may be longer (a compatible provider's
# "MESSAGE_BODY_REJECTED_BY_DOWNSTREAM_CARRIER_FILTER"): cut, it is still read, where whole it
# could not be written down and the message was sent again after every lease.
CODE_LENGTH = 50


class DeliveryError(Exception):
    permanent = False

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        retry_after: float | None = None,
        throttled: bool = False,
        refuses_recipient: bool = False,
        setting_to_fix: str = "",
    ):
        message = message.replace("\x00", "")  # PostgreSQL refuses NUL in text
        super().__init__(message)
        self.message = message
        self.code = code.replace("\x00", "")[:CODE_LENGTH]
        # Seconds the provider asked to be left alone (its Retry-After), when it said.
        self.retry_after = retry_after
        # The provider said the sends come too fast (HTTP 429, Twilio 20429 or 30001, SMTP 421):
        # no send on the channel should follow at once, from any worker, not only this retry.
        self.throttled = throttled
        # The provider refused the recipient itself, for good (unsubscribed, not a mobile number,
        # no such mailbox): nothing more is sent to it until an operator lifts the suppression.
        self.refuses_recipient = refuses_recipient
        # The variable an operator has to correct (refused credentials, a server that is not the
        # provider): every send fails alike until then, so each retry is logged as an error.
        self.setting_to_fix = setting_to_fix


class TransientDeliveryError(DeliveryError):
    """Worth another try later: network trouble, throttling, a provider's own outage."""


class PermanentDeliveryError(DeliveryError):
    """Will fail the same way every time: a bad number, an unsubscribed or refused recipient."""

    permanent = True
