"""docker-compose.yml and the example env, checked by reading them (no Docker engine needed)."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands

from notifications.management.commands.start_celery_worker import Command as StartWorker
from orderflow.configuration import PLACEHOLDER_MARK

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = {"migrate", "web", "worker-sms", "worker-email", "worker-notifications", "beat"}
EXAMPLE_ENV = dict(
    line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#")
)


def test_the_stack_has_every_part():
    assert set(SERVICES) == APP_SERVICES | {"postgres", "redis", "rabbitmq", "flower"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_has_an_image_or_build_and_a_health_check(name):
    service = SERVICES[name]
    assert service.get("image") or service.get("build")
    if name != "migrate":  # a one-shot job: its exit code is its health
        assert service["healthcheck"]["test"]


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_services_run_our_image_with_the_example_env(name):
    service = SERVICES[name]
    assert service["build"] == "."
    assert service["env_file"] == ".env"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_commands_exist(name):
    command = SERVICES[name]["command"]
    if command[:2] == ["python", "manage.py"]:
        assert command[2] in get_commands()
    elif command[0] == "gunicorn":
        assert importlib.util.find_spec(command[1].split(":")[0]) is not None
    else:
        assert command[:3] == ["celery", "-A", "orderflow"]
        assert command[3] in {"beat", "worker"}


@pytest.mark.parametrize("name", ["worker-sms", "worker-email", "worker-notifications"])
def test_worker_commands_parse_and_name_known_queues(name):
    command = SERVICES[name]["command"]
    worker = StartWorker()
    options = vars(worker.create_parser("manage.py", "start_celery_worker").parse_args(command[3:]))
    argv = worker.worker_argv(options)
    assert f"--hostname={SERVICES[name]['environment']['WORKER_NAME']}@%h" in argv


def test_dependencies_name_real_services_and_wait_for_migrations():
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in APP_SERVICES - {"migrate"}:
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_only_web_is_public_and_the_consoles_stay_on_loopback():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert name == "web" or port.startswith("127.0.0.1:"), f"{name} publishes {port}"
    assert SERVICES["rabbitmq"]["image"].endswith("-management")
    assert "FLOWER_BASIC_AUTH" in SERVICES["flower"]["environment"]


def test_every_variable_the_compose_file_reads_is_in_the_example_env():
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    assert used <= set(EXAMPLE_ENV)


def test_the_example_env_names_every_contract_variable():
    contract = set(re.findall(r"^\| `([A-Z_]+)`", (ROOT / "README.md").read_text(), re.MULTILINE))
    contract |= {"TWILIO_AUTH_TOKEN", "TWILIO_MESSAGING_SERVICE_SID"}
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert contract <= documented, contract - documented


def test_the_example_env_with_its_secrets_set_passes_the_deployment_checks(tmp_path):
    """As a deployment fills it in: every CHANGE value replaced (as they are, start-up refuses them:
    test_configuration)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_URL"))}
    env.update({key: value.replace(PLACEHOLDER_MARK, "our-own-7f3a9c") for key, value in EXAMPLE_ENV.items()})
    # /metrics is the compose file's volume inside the containers; here a directory stands in for it.
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_reading_the_env_can_write_its_metrics_directory():
    """Each process checks PROMETHEUS_MULTIPROC_DIR at start: the migrate job without it stopped,
    and every service waiting for migrate with it."""
    directory = EXAMPLE_ENV["PROMETHEUS_MULTIPROC_DIR"]
    readers = [name for name, service in SERVICES.items() if service.get("env_file") == ".env"]
    assert set(readers) == APP_SERVICES
    for name in readers:
        assert f"metrics:{directory}" in SERVICES[name].get("volumes", []), name
    dockerfile = (ROOT / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert f"mkdir {directory} && chown {user} {directory}" in dockerfile  # where no volume is mounted


def test_the_readme_explains_every_service():
    readme = (ROOT / "README.md").read_text()
    for name in SERVICES:
        assert f"`{name}`" in readme, f"README does not explain {name}"


def test_the_image_installs_the_pinned_requirements_and_serves_with_gunicorn():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert "collectstatic" in dockerfile
    [cmd] = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert json.loads(cmd) == SERVICES["web"]["command"]  # one way to serve, with or without compose


def test_make_run_gives_every_process_the_environment_over_dotenv_as_migrate_sees_it(tmp_path):
    """The database migrated is the one the app then uses: `.env` fills in, the environment wins."""
    make = shutil.which("make")
    recipe = subprocess.run([make, "-n", "run"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    [honcho] = [line for line in recipe.splitlines() if "honcho start" in line]
    options = honcho.split("honcho start", 1)[1].split()
    (tmp_path / ".env").write_text("ORDERFLOW_PROBE=from-dotenv\n")
    (tmp_path / "Procfile").write_text(
        f"probe: {sys.executable} -c \"import os; print(os.environ['ORDERFLOW_PROBE'])\"\n"
    )
    started = subprocess.run(
        [str(Path(sys.executable).parent / "honcho"), "start", *options],
        cwd=tmp_path,
        env={**os.environ, "ORDERFLOW_PROBE": "from-the-environment"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "from-the-environment" in started.stdout, started.stdout + started.stderr


@pytest.mark.parametrize(("environment", "address"), [({}, "127.0.0.1:8000"), ({"WEB_PORT": "8123"}, "127.0.0.1:8123")])
def test_make_run_serves_on_port_8000_or_web_port(environment, address):
    """Another program on 8000 need not stop `make run`: WEB_PORT=8123 make run."""
    [web] = [line.split(":", 1)[1] for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")]
    clean = {key: value for key, value in os.environ.items() if key != "WEB_PORT"}
    shown = subprocess.run(
        [shutil.which("sh"), "-c", f"echo {web}"],
        env={**clean, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split()[-1] == address
