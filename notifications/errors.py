"""How a failed send is classified. Backends translate their provider's errors into these;
the pipeline decides from the class alone whether to retry or to give up."""


class DeliveryError(Exception):
    permanent = False

    def __init__(self, message: str, *, code: str = ""):
        super().__init__(message)
        self.message = message
        self.code = code


class TransientDeliveryError(DeliveryError):
    """Worth another try later: network trouble, throttling, a provider's own outage."""


class PermanentDeliveryError(DeliveryError):
    """Will fail the same way every time: a bad number, an unsubscribed or refused recipient."""

    permanent = True
