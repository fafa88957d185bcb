"""An SMS backend for unit tests of one process: each send takes the next scripted outcome."""

import itertools
from collections import deque

_ids = itertools.count(1)


class ScriptedBackend:
    script: deque = deque()  # exceptions to raise, in order; when empty, sends succeed
    sent: list = []

    def send(self, *, recipient: str, body: str, **_) -> str:
        if self.script:
            raise self.script.popleft()
        message_id = f"scripted-{next(_ids)}"
        self.sent.append((recipient, body))
        return message_id
