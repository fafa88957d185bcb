"""Servers a fault test owns and may stop: a redis-server and a PostgreSQL cluster of its own,
each on a free loopback port, so the machine's shared services are never touched."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import redis

from tests.fakes.smtp_server import free_port
from tests.waiting import wait_until


def executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (the fault tests start their own servers)")
    return path


class RedisServer:
    """redis-server with nothing saved to disk: stopped and started again, it comes back empty,
    as a broker or limiter restarted without persistence does."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="orderflow-test-redis-"))
        self.process = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            [
                executable("redis-server"),
                *("--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._answers, timeout=20, what=f"redis-server on port {self.port}")
        except BaseException:
            self.stop()  # a server that never answered is not left running
            raise
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{(self.dir / 'redis.log').read_text()[-2000:]}")
        try:
            return redis.Redis(port=self.port, socket_connect_timeout=1).ping()
        except redis.ConnectionError:
            return False


def postgres_bin_dir() -> Path:
    """The newest PostgreSQL server binaries installed (Debian layout), or ORDERFLOW_TEST_PG_BIN."""
    if os.environ.get("ORDERFLOW_TEST_PG_BIN"):
        return Path(os.environ["ORDERFLOW_TEST_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: set ORDERFLOW_TEST_PG_BIN")
    return found[-1].parent


class PostgresCluster:
    """A throwaway cluster (initdb, trust on loopback, no fsync) that a test may restart."""

    def __init__(self):
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="orderflow-test-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create(self) -> "PostgresCluster":
        if os.geteuid() == 0:  # initdb refuses to run as root; the cluster belongs to postgres
            shutil.chown(self.dir, user="postgres", group="postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> "PostgresCluster":
        self._pg_ctl("start")
        return self

    def stop(self) -> None:
        """What `pg_ctl stop -m fast` does: every connection is cut, none is accepted."""
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """What an operator's `pg_ctl restart -m fast` does: every connection is cut."""
        self._pg_ctl("restart", "-m", "fast")

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pg_ctl(self, action: str, *options: str) -> None:
        # fsync off: the cluster lives for one test; a fast shutdown still checkpoints everything.
        server_options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", server_options, "-w", action, *options)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = [executable("runuser"), "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            server_log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stderr}{result.stdout}{server_log}")
