"""Publishing after commit on a thread of the process's own, so a request never waits on the broker.

The rows are committed as `queued` before anything is handed here. If the process dies with
messages still in this queue, the sweep finds those rows (queued, with fewer messages in their
broker queue than rows) and publishes them: a lost message costs a delay, never a notification.
"""

import logging
import os
import queue
import threading

from django.db import connections

logger = logging.getLogger(__name__)

# Orders waiting to be published beyond this are published on the caller's thread instead:
# back-pressure rather than unbounded memory when the broker is slow.
MAX_WAITING = 10_000


class BackgroundPublisher:
    def __init__(self, publish):
        self._publish = publish
        self._jobs: queue.Queue = queue.Queue(maxsize=MAX_WAITING)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def submit(self, jobs: list) -> None:
        self._ensure_running()
        try:
            self._jobs.put_nowait(jobs)
        except queue.Full:
            self._publish(jobs)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far was handed to the broker (or left for the sweep)."""
        done = threading.Event()
        self._ensure_running()
        self._jobs.put(done)
        return done.wait(timeout)

    def _ensure_running(self) -> None:
        # After a fork (gunicorn, prefork) the parent's thread is gone: start one in this process.
        if self._pid == os.getpid() and self._thread and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid() or not (self._thread and self._thread.is_alive()):
                self._jobs = queue.Queue(maxsize=MAX_WAITING)
                self._thread = threading.Thread(target=self._run, name="notification-publisher", daemon=True)
                self._pid = os.getpid()
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._publish(item)
            except Exception:  # the thread must outlive any one failure; the sweep covers the rows
                logger.exception("background publish failed; the sweep will publish these")
            finally:
                if self._jobs.empty():
                    connections.close_all()  # idle: hold no database connection while waiting
