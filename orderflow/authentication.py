"""API authentication. Kept apart from orderflow.api: DRF imports it while it loads its views."""

from rest_framework import authentication, exceptions


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's `Authorization: Token <key>`, refusing at once a key no token can have (keys are
    hexadecimal): one holding a NUL reached PostgreSQL, which answered with an error."""

    def authenticate_credentials(self, key):
        if not (key.isascii() and key.isalnum()):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
