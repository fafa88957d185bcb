"""Load: the order API under concurrent clients with notifications on and off, then orders end
to end through real workers to a Twilio double and a real SMTP server.

Everything runs on this machine: gunicorn with docker-compose.yml's web command
(`orderflow.wsgi`, 3 sync workers, access log) and .env.example's production settings, JSON logs
at INFO (to files under the temp directory), PostgreSQL, and Redis as the broker. It uses a
database and Redis dbs of its own (orderflow_load, 8 and 9; ORDERFLOW_BENCH_* choose others), so
that it can run next to the other benchmarks.

1. API. `--clients` threads (http.client; gunicorn's sync workers close the connection after
   each answer, so every request opens a new one) POST orders with a phone and an email, so that
   each order makes an SMS and an email notification. Two servers run side by side: "on" serves
   orderflow.wsgi, "off" serves bench.wsgi_notifications_off, the same application with the
   notifications receivers disconnected by their dispatch_uids (no product setting). After an
   unmeasured warm-up of each, the load moves between them in rounds of four phases, on, off,
   off, on, of about `--phase-seconds` each, `--seconds` in all per mode: a drift (tables
   growing, the other benchmarks, autovacuum) weighs on both modes alike, and the rounds show
   how much the machine's noise moves the ratio. No worker runs: the "on" orders' messages wait
   in the broker, are counted against their outbox rows, and are then deleted.
   Printed per round: orders per second of each mode and the ratios. Per mode: requests,
   errors (every answer but a 201 is printed with its body), p50 and p99 latency, orders per
   second, CPU per order of gunicorn's workers and of the database's backends, how busy the
   machine was, the load generator's own CPU; then the time per order on / off from throughput
   (goal: at most 1.3), p50 on / off, and CPU per order on / off.

2. End to end. `--orders` orders through the API of an "on" server (`--clients` clients),
   with no worker running; then an sms and an email worker (start_celery_worker's options:
   prefork, `--concurrency` each) send the backlog to the Twilio double and to a real SMTP
   server, each a process of its own (bench/providers.py), both rate limits lifted. So the time
   to place is the API's alone and the time to drain the workers' alone. Checked: every
   notification `sent`, every order's SMS and email received, duplicates counted. Printed: time
   to place, time to drain (first send to last), the total from the first order, sends per
   second, and the peak resident memory (VmHWM, shared pages counted in each process) of
   gunicorn's arbiter and workers, of each Celery worker's main process and pool children
   (replaced every 1000 tasks, so sampled while they live), of the two servers and of this
   process.

    .venv/bin/python bench/load.py [--seconds 60] [--phase-seconds 7.5] [--clients 16] [--orders 10000]
        [--web-workers 3] [--concurrency 2] [--part both|api|e2e]
"""

import argparse
import http.client
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import redis

os.environ.setdefault("ORDERFLOW_BENCH_DATABASE", "orderflow_load")
os.environ.setdefault("ORDERFLOW_BENCH_BROKER_URL", "redis://127.0.0.1:6379/8")
os.environ.setdefault("ORDERFLOW_BENCH_LIMITER_URL", "redis://127.0.0.1:6379/9")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # first: it sets Django up for the imports below

# isort: split

from django.db.models import Count, Max, Min
from rest_framework.authtoken.models import Token

from notifications.models import Channel, Notification, NotificationStatus
from orders.models import Order
from tests.fakes.smtp_server import free_port
from tests.processes import reap_group, stop_group

GOAL_RATIO = 1.3
LIFTED_LIMIT = "100000/s"
APPS = {"on": "orderflow.wsgi", "off": "bench.wsgi_notifications_off"}
# A round of phases: a drift that is linear over a round weighs on both modes alike.
ROUND = ("on", "off", "off", "on")
WARM_UP_SECONDS = 3
LOG_DIR = Path(tempfile.gettempdir())
# .env.example's deployment, over plain HTTP on loopback.
DEPLOYED = {
    "DJANGO_SETTINGS_MODULE": "orderflow.settings.production",
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
}
ORDER_BODY = json.dumps(
    {
        "customer_name": "Ada Lovelace",
        "customer_email": harness.CUSTOMER_EMAIL,
        "customer_phone": harness.CUSTOMER_PHONE,
        "items": [{"sku": "TEA-1", "name": "Green tea", "quantity": 2, "unit_price": "4.50"}],
    }
).encode()


# --- processes ------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # gone already
        return []


def peak_memory_kb(pid: int) -> int | None:
    """VmHWM: the most resident memory the process has held so far."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class DatabaseBackends:
    """PostgreSQL's backend processes serving the bench database: their process titles name it."""

    def __init__(self):
        self.marker = f" {harness.DATABASE_NAME} ".encode()
        self.known: dict[int, bool] = {}  # pid -> a backend of ours; a title never moves to another database

    def __call__(self) -> list[int]:
        pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
        for pid in pids:
            if pid not in self.known:
                with suppress(OSError):
                    title = Path(f"/proc/{pid}/cmdline").read_bytes()
                    self.known[pid] = title.startswith(b"postgres:") and self.marker in title
        return [pid for pid in pids if self.known.get(pid)]


class CPUMeter:
    """CPU seconds used by a changing set of processes (`find()` lists them), sampled every
    0.25 s: one that exits counts up to its last sample, one that starts counts from zero."""

    def __init__(self, find):
        self.find = find
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def __enter__(self) -> "CPUMeter":
        self._sample(since_start=False)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.first)

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def _sample(self, *, since_start: bool = True) -> None:
        for pid in self.find():
            used = cpu_seconds(pid)
            if used is not None:
                self.first.setdefault(pid, 0.0 if since_start else used)
                self.last[pid] = used


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine since boot."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    every = user + nice + system + idle + iowait + irq + softirq + steal
    return every - idle - iowait, every


class Gunicorn:
    """docker-compose.yml's web command (`gunicorn orderflow.wsgi --preload --workers 3 --access-logfile -`)
    serving `app` on a free loopback port, in a process group of its own."""

    def __init__(self, *, name: str, app: str, env: dict, workers: int):
        self.name, self.env, self.workers = name, env, workers
        self.port = free_port()
        self.argv = [
            *(sys.executable, "-m", "gunicorn", app, "--preload"),
            *("--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "--access-logfile", "-"),
            *("--logger-class", "orderflow.gunicorn_logging.MaskedAccessLogger"),
            # Several servers run side by side here; each would take over the one default socket path.
            "--no-control-socket",
        ]
        self.log_path = LOG_DIR / f"orderflow-load-{name}.log"
        self.process = None

    def start(self) -> "Gunicorn":
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(  # noqa: S603
                self.argv, cwd=harness.ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return children_of(self.pid)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn {self.name} exited:\n{self.log_path.read_text()[-3000:]}")
        if len(self.worker_pids()) < self.workers:
            return False
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self) -> None:
        stop_group(self.process, timeout=30)


@contextmanager
def serving(servers: list[Gunicorn]):
    try:
        for server in servers:
            server.start()
        harness.wait_until(lambda: all(server.ready() for server in servers), timeout=60, what="gunicorn to serve")
        yield servers
    finally:
        for server in servers:
            if server.process is not None:
                server.stop()


class Provider:
    """bench/providers.py in a process of its own: the Twilio double or the SMTP server. On
    leaving, `received` holds the order number of every message it accepted."""

    def __init__(self, kind: str, *args: str):
        self.kind = kind
        self.argv = [sys.executable, "-m", "bench.providers", kind, *args]
        self.log_path = LOG_DIR / f"orderflow-load-{kind}.log"
        self.received: list[int | None] = []

    def __enter__(self) -> "Provider":
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(  # noqa: S603
                self.argv,
                cwd=harness.ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.kind} server did not start:\n{self.log_path.read_text()[-3000:]}")
        self.url = json.loads(line)["url"]
        self.pid = self.process.pid
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            output, _ = self.process.communicate(timeout=60)  # closes its stdin: it reports and exits
        except subprocess.TimeoutExpired:
            reap_group(self.process, timeout=0)
            raise
        self.received = json.loads(output.strip().splitlines()[-1])["orders"]


class PeakMemory:
    """The peak resident memory of the watched processes and of their children, sampled in a
    thread every 0.2 s while they run, so that children replaced meanwhile count too."""

    def __init__(self, processes: dict[str, int]):
        self.processes = processes  # label -> pid of the main process
        self.main: dict[str, int] = {}
        self.children: dict[str, dict[int, int]] = {label: {} for label in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def sample(self) -> None:
        for label, pid in self.processes.items():
            self.main[label] = max(self.main.get(label, 0), peak_memory_kb(pid) or 0)
            seen = self.children[label]
            for child in children_of(pid):
                seen[child] = max(seen.get(child, 0), peak_memory_kb(child) or 0)


# --- the load -------------------------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float]  # seconds, of every answer
    failures: list[str]  # every answer but a 201, and every request that got no answer
    created: int
    seconds: float  # from the first request to the last answer
    started_at: float  # time.time()
    client_cpu: float  # CPU seconds this process used
    web_cpu: float  # CPU seconds gunicorn's workers used
    database_cpu: float  # CPU seconds PostgreSQL's backends for the bench database used
    machine_busy: float  # share of the machine's CPU time that was busy

    @property
    def requests(self) -> int:
        return self.created + len(self.failures)

    @property
    def per_second(self) -> float:
        return self.created / self.seconds

    def percentile_ms(self, percent: int) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[percent - 1] * 1000

    @classmethod
    def combined(cls, runs: list["Run"]) -> "Run":
        total = sum(run.seconds for run in runs)
        return cls(
            latencies=[latency for run in runs for latency in run.latencies],
            failures=[failure for run in runs for failure in run.failures],
            created=sum(run.created for run in runs),
            seconds=total,
            started_at=runs[0].started_at,
            client_cpu=sum(run.client_cpu for run in runs),
            web_cpu=sum(run.web_cpu for run in runs),
            database_cpu=sum(run.database_cpu for run in runs),
            machine_busy=sum(run.machine_busy * run.seconds for run in runs) / total,
        )


def place_orders(
    server: Gunicorn, *, token: str, clients: int, seconds: float | None = None, orders: int | None = None
) -> Run:
    """POST orders from `clients` threads for `seconds`, or until `orders` requests were made."""
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    latencies, failures, created = [], [], []  # list.append is atomic: no lock needed
    tickets = itertools.count()
    start = threading.Barrier(clients + 1)
    deadline = float("inf")

    def another() -> bool:
        if orders is not None:
            return next(tickets) < orders
        return time.monotonic() < deadline

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        start.wait()
        while another():
            began = time.perf_counter()
            try:
                connection.request("POST", "/api/orders/", body=ORDER_BODY, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                failures.append(f"no answer: {error.__class__.__name__}: {error}")
                continue
            latencies.append(time.perf_counter() - began)
            if response.status == 201:
                created.append(1)
            else:
                failures.append(f"{response.status}: {body[:500].decode(errors='replace')}")
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    with CPUMeter(server.worker_pids) as web, CPUMeter(DatabaseBackends()) as database:
        client_cpu, (busy, every) = time.process_time(), machine_ticks()
        started_at, started = time.time(), time.monotonic()
        if seconds is not None:
            deadline = started + seconds
        start.wait()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        client_cpu, (busy_after, every_after) = time.process_time() - client_cpu, machine_ticks()
    return Run(
        latencies=latencies,
        failures=failures,
        created=len(created),
        seconds=elapsed,
        started_at=started_at,
        client_cpu=client_cpu,
        web_cpu=web.seconds,
        database_cpu=database.seconds,
        machine_busy=(busy_after - busy) / max(1, every_after - every),
    )


def api_token() -> str:
    return Token.objects.get_or_create(user=harness.bench_owner())[0].key


def deployed_env(metrics_dir: str, **overrides: str) -> dict:
    return {**os.environ, **DEPLOYED, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, **overrides}


# --- 1. the API, notifications on and off ---------------------------------------------------


def phase_plan(seconds: float, phase_seconds: float) -> tuple[list[str], float]:
    """The modes in the order they run, in rounds of on, off, off, on; and the length of a phase."""
    rounds = max(1, round(seconds / (2 * phase_seconds)))
    return list(ROUND * rounds), seconds / (2 * rounds)


def api_under_load(args, *, token: str, metrics_dir: str) -> None:
    env = deployed_env(metrics_dir)
    servers = {
        mode: Gunicorn(name=f"api-{mode}", app=app, env=env, workers=args.web_workers) for mode, app in APPS.items()
    }
    plan, phase_seconds = phase_plan(args.seconds, args.phase_seconds)
    runs = []  # (mode, Run) in the order they ran
    with serving(list(servers.values())):
        warm_up = {
            mode: place_orders(server, token=token, clients=args.clients, seconds=WARM_UP_SECONDS)
            for mode, server in servers.items()
        }
        for mode in plan:
            runs.append((mode, place_orders(servers[mode], token=token, clients=args.clients, seconds=phase_seconds)))

    on_orders = warm_up["on"].created + sum(run.created for mode, run in runs if mode == "on")
    outbox = Notification.objects.count()
    broker = redis.Redis.from_url(harness.BROKER_URL)
    waiting = sum(broker.llen(queue) for queue in (Channel.SMS, Channel.EMAIL))
    harness.empty_broker_and_limiter()

    rounds = [runs[number : number + len(ROUND)] for number in range(0, len(runs), len(ROUND))]
    harness.print_table(
        f"API under load, round by round ({', '.join(ROUND)}; {phase_seconds:g} s a phase)",
        ["", "on, orders/s", "off, orders/s", "time per order on / off", "p50 on / off"],
        [[f"round {number}", *_comparison(round_runs)] for number, round_runs in enumerate(rounds, 1)],
    )
    by_mode = {mode: Run.combined([run for seen, run in runs if seen == mode]) for mode in APPS}
    harness.print_table(
        f"API under load: {args.clients} clients, POST /api/orders/ (SMS + email), gunicorn {args.web_workers} "
        f"sync workers, {args.seconds:g} s per mode",
        [
            "",
            "requests",
            "errors",
            "orders/s",
            "p50 ms",
            "p99 ms",
            "web CPU ms/order",
            "db CPU ms/order",
            "machine busy",
            "client CPU",
        ],
        [[f"notifications {mode}", *_figures(by_mode[mode])] for mode in APPS],
    )
    on, off = by_mode["on"], by_mode["off"]
    per_order = off.per_second / on.per_second
    print(
        f"\n  time per order on / off, from throughput: {per_order:.2f} (goal <= {GOAL_RATIO}): "
        f"{'yes' if per_order <= GOAL_RATIO else 'NO'}"
    )
    print(f"  p50 latency on / off: {on.percentile_ms(50) / off.percentile_ms(50):.2f}")
    for what, on_cpu, off_cpu in (("web", on.web_cpu, off.web_cpu), ("db", on.database_cpu, off.database_cpu)):
        print(f"  {what} CPU per order on / off: {(on_cpu / on.created) / (off_cpu / off.created):.2f}")
    print(
        f"  outbox: {outbox} notifications for {on_orders} orders placed with notifications on "
        f"({'2 each' if outbox == 2 * on_orders else 'NOT 2 each'}); {waiting} messages were waiting in the broker "
        f"({'one each' if waiting == outbox else 'NOT one each'}), now deleted"
    )
    _print_failures([failure for _, run in [*warm_up.items(), *runs] for failure in run.failures])


def _comparison(runs: list[tuple[str, Run]]) -> list[str]:
    on, off = (Run.combined([run for seen, run in runs if seen == mode]) for mode in APPS)
    return [
        f"{on.per_second:.1f}",
        f"{off.per_second:.1f}",
        f"{off.per_second / on.per_second:.2f}",
        f"{on.percentile_ms(50) / off.percentile_ms(50):.2f}",
    ]


def _figures(run: Run) -> list[str]:
    return [
        str(run.requests),
        str(len(run.failures)),
        f"{run.per_second:.1f}",
        f"{run.percentile_ms(50):.1f}",
        f"{run.percentile_ms(99):.1f}",
        f"{run.web_cpu / max(1, run.created) * 1000:.2f}",
        f"{run.database_cpu / max(1, run.created) * 1000:.2f}",
        f"{run.machine_busy:.0%}",
        f"{run.client_cpu / run.seconds:.0%} of a core",
    ]


def _print_failures(failures: list[str]) -> None:
    if not failures:
        print("  errors: none")
        return
    print(f"  errors: {len(failures)}")
    for failure, times in Counter(failures).most_common():
        print(f"    {times} x {failure}")


# --- 2. end to end --------------------------------------------------------------------------


def end_to_end(args, *, token: str, metrics_dir: str) -> None:
    harness.prepare()
    expected = 2 * args.orders
    with ExitStack() as stack:
        twilio = stack.enter_context(Provider("twilio", harness.TWILIO_SID, harness.TWILIO_TOKEN))
        smtp = stack.enter_context(Provider("smtp"))
        env = harness.worker_env(
            twilio,
            **deployed_env(metrics_dir),
            EMAIL_URL=smtp.url,
            NOTIFICATIONS_SMS_RATE_LIMIT=LIFTED_LIMIT,
            NOTIFICATIONS_EMAIL_RATE_LIMIT=LIFTED_LIMIT,
        )
        web = Gunicorn(name="e2e", app=APPS["on"], env=env, workers=args.web_workers)
        stack.enter_context(serving([web]))
        run = place_orders(web, token=token, clients=args.clients, orders=args.orders)
        broker = redis.Redis.from_url(harness.BROKER_URL)
        waiting = {queue: broker.llen(queue) for queue in (Channel.SMS, Channel.EMAIL)}

        workers = {
            queue: harness.Worker(name=f"load-{queue}", env=env, queue=queue, concurrency=args.concurrency)
            for queue in (Channel.SMS, Channel.EMAIL)
        }
        workers_started = time.time()
        stack.enter_context(harness.running_workers(list(workers.values())))
        workers_ready = time.time()
        # A peak stays with its process: only pool children, replaced as they go, need watching as they run.
        memory = stack.enter_context(
            PeakMemory(
                {
                    "gunicorn": web.pid,
                    **{f"{queue} worker": worker.process.pid for queue, worker in workers.items()},
                    "Twilio double": twilio.pid,
                    "SMTP server": smtp.pid,
                }
            )
        )
        sent = Notification.objects.filter(status=NotificationStatus.SENT)
        harness.wait_until(
            lambda: sent.count() >= 2 * run.created,
            timeout=max(300, args.orders / 10),
            interval=0.25,
            what=f"{2 * run.created} notifications to be sent",
        )
        first_sent, last_sent = (
            moment.timestamp() for moment in sent.aggregate(first=Min("sent_at"), last=Max("sent_at")).values()
        )

    statuses = dict(Notification.objects.values_list("status").annotate(count=Count("id")).order_by())
    drain = last_sent - first_sent
    harness.print_table(
        f"End to end: {args.orders} orders through the API ({args.clients} clients, gunicorn {args.web_workers} "
        f"workers), then an sms and an email worker (prefork, concurrency {args.concurrency}), limits {LIFTED_LIMIT}",
        ["", "value"],
        [
            ["orders placed (201), no worker running", run.created],
            ["time to place, s", f"{run.seconds:.1f}"],
            ["orders/s", f"{run.per_second:.1f}"],
            ["API p50 / p99, ms", f"{run.percentile_ms(50):.1f} / {run.percentile_ms(99):.1f}"],
            ["messages waiting in the broker", ", ".join(f"{queue} {count}" for queue, count in waiting.items())],
            ["workers started to ready, s", f"{workers_ready - workers_started:.1f}"],
            ["time to drain, first send to last, s", f"{drain:.1f}"],
            ["sends/s while draining", f"{statuses.get(NotificationStatus.SENT, 0) / drain:.1f}"],
            ["total, first order to last send, s", f"{last_sent - run.started_at:.1f}"],
            ["notifications by status", ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))],
        ],
    )
    print()
    order_ids = set(Order.objects.values_list("pk", flat=True))
    for provider in (twilio, smtp):
        _print_arrivals(provider, order_ids)
    all_sent = statuses == {NotificationStatus.SENT: expected} and run.created == args.orders
    print(f"  nothing lost: {'yes' if all_sent else 'NO'} ({expected} notifications expected)")
    _print_failures(run.failures)
    _print_memory(memory)


def _print_arrivals(provider: Provider, order_ids: set[int]) -> None:
    received = Counter(provider.received)
    duplicates = sum(times - 1 for times in received.values())
    missing = len(order_ids - set(received))
    strangers = sum(times for order_id, times in received.items() if order_id not in order_ids)
    print(
        f"  {provider.kind}: {len(provider.received)} received, {len(received)} distinct orders, "
        f"{duplicates} duplicates, {missing} orders missing, {strangers} for no order of this run"
    )


def _print_memory(memory: PeakMemory) -> None:
    rows = [["this process (load client, checks)", "main", f"{peak_memory_kb(os.getpid()) / 1024:.0f}"]]
    for label in memory.processes:
        rows.append([label, "main", f"{memory.main[label] / 1024:.0f}"])
        children = memory.children[label]
        if children:
            role = "workers" if label == "gunicorn" else "pool children"
            smallest, largest = min(children.values()) / 1024, max(children.values()) / 1024
            rows.append(["", f"{role} ({len(children)} seen)", f"{smallest:.0f} to {largest:.0f} each"])
    harness.print_table("Peak memory (VmHWM, MB)", ["process", "role", "MB"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="seconds of load per mode (default 60)")
    parser.add_argument("--phase-seconds", type=float, default=7.5, help="about this long a phase (default 7.5)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--orders", type=int, default=10000, help="orders end to end (default 10000)")
    parser.add_argument("--web-workers", type=int, default=3, help="gunicorn workers (default 3, as deployed)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per Celery worker (default 2)")
    parser.add_argument("--part", choices=("both", "api", "e2e"), default="both")
    args = parser.parse_args()

    metrics_dir = tempfile.mkdtemp(prefix="orderflow-load-metrics-")
    try:
        harness.prepare()
        token = api_token()
        print(f"database {harness.DATABASE_NAME}, broker {harness.BROKER_URL}, limiter {harness.LIMITER_URL}")
        print(f"logs: {LOG_DIR}/orderflow-load-*.log, {LOG_DIR}/orderflow-bench-load-*.log")
        if args.part in ("both", "api"):
            api_under_load(args, token=token, metrics_dir=metrics_dir)
        if args.part in ("both", "e2e"):
            end_to_end(args, token=token, metrics_dir=metrics_dir)
    finally:
        harness.empty_broker_and_limiter()
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
