"""gunicorn's access log with phone numbers and email addresses masked, as every other log line
is (orderflow.masking): a request line or a referer carries an admin search's query whole."""

from gunicorn.glogging import Logger

from orderflow.masking import mask_text


class MaskedAccessLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {name: mask_text(value) if isinstance(value, str) else value for name, value in atoms.items()}
