"""Sessions kept in the database, as Django keeps them, from a cookie that can be a key."""

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key):
        # Django makes keys of lowercase letters and digits. Any other cookie (one holding a NUL,
        # which PostgreSQL refuses in a query) is forged or broken: no session, not a 500.
        return super()._validate_session_key(key) and key.isascii() and key.isalnum()
