"""API authentication. Kept apart from orderflow.api: DRF imports it while it loads its views."""

from rest_framework import authentication, exceptions


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's `Authorization: Token <key>`, refusing at once a key no token can have (keys are
    hexadecimal): one holding a NUL reached PostgreSQL, which answered with an error."""

    def authenticate(self, request):
        # A client written for OAuth sends its key as a Bearer token, and was told only that no
        # credentials came.
        scheme = authentication.get_authorization_header(request).split(b" ", 1)[0]
        if scheme.lower() == b"bearer":
            raise exceptions.AuthenticationFailed(
                "The API takes its key as Authorization: Token <key>, not Bearer <key>."
            )
        return super().authenticate(request)

    def authenticate_credentials(self, key):
        if not (key.isascii() and key.isalnum()):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)
