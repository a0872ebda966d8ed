"""The process definitions (Procfile, docker/compose.yaml, the Dockerfiles) have the shape the deployment docs promise.

Docker is not available to the tests, so compose.yaml is checked as data: services, queues, GPU reservations,
published ports, secrets only by ``${VAR}`` from docker/.env, non-root images, and the PostgreSQL init script
that gives the task pool its database (run for real by ``psql``, the client the postgres image runs it with).
Procfile lines are expanded by ``sh`` exactly as honcho/foreman would run them.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PROCESSES = {"mlflow", "worker-gpu", "worker-cpu", "flower"}
SERVICES = {"redis", "postgres", "mlflow", "flower", "worker-cpu", "worker-gpu"}
QTRAIN_SERVICES = ("mlflow", "flower", "worker-cpu", "worker-gpu", "worker-gpu1")
WORKERS = ("worker-cpu", "worker-gpu", "worker-gpu1")
PASSWORD = "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in docker/.env}"
# the task pool: database qtrain on the server that holds MLflow's database, as the same user
TASK_STORE = f"postgresql://${{POSTGRES_USER:-mlflow}}:{PASSWORD}@postgres:5432/qtrain"
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH", re.I)


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and re.fullmatch(r"[a-z0-9-]+", name), f"bad Procfile line: {line!r}"
        entries[name] = command.strip()
    return entries


def _expand(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Argument words of ``command`` after ``sh`` expansion (how Procfile runners start a line)."""
    script = f'set -- {command}; printf "%s\\n" "$@"'
    return subprocess.run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def _command(service: dict[str, Any]) -> list[str]:
    entry, command = service.get("entrypoint", []), service.get("command", [])
    words = [*entry, *command]
    assert all(isinstance(w, str) for w in words), "write entrypoint/command as lists of strings"
    return words


def test_procfile_processes_and_commands() -> None:
    procs = _procfile()
    assert set(procs) == PROCESSES
    assert shlex.split(procs["worker-gpu"]) == ["celery", "-A", "app", "worker", "-Q", "gpu", "-c", "1", "-n", "gpu@%h"]
    assert shlex.split(procs["worker-cpu"])[:5] == ["celery", "-A", "app", "worker", "-Q"]
    flower = shlex.split(procs["flower"])
    assert flower[:4] == ["celery", "-A", "app", "flower"]
    assert "--address=127.0.0.1" in flower
    mlflow = shlex.split(procs["mlflow"])
    assert mlflow[:2] == ["mlflow", "server"]
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1"
    assert not any("python" in c for c in procs.values()), "no inline python in the Procfile"


def test_procfile_lines_expand_in_sh() -> None:
    procs = _procfile()
    cpu = _expand(procs["worker-cpu"], {})
    assert cpu.returncode == 0, cpu.stderr
    assert cpu.stdout.split() == ["celery", "-A", "app", "worker", "-Q", "cpu", "-c", "2", "-n", "cpu@%h"]
    assert _expand(procs["worker-cpu"], {"QTRAIN_CPU_WORKERS": "6"}).stdout.split()[7] == "6"

    flower = _expand(procs["flower"], {"FLOWER_BASIC_AUTH": "ops:pw"})
    assert flower.returncode == 0, flower.stderr
    assert "--basic-auth=ops:pw" in flower.stdout.split()
    # without credentials the line refuses to start instead of serving Flower unauthenticated
    unset = _expand(procs["flower"], {})
    assert unset.returncode != 0 and "FLOWER_BASIC_AUTH" in unset.stderr

    mlflow = _expand(procs["mlflow"], {}).stdout.split()
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == "sqlite:///mlflow.db"
    pg = _expand(procs["mlflow"], {"MLFLOW_BACKEND_STORE_URI": "postgresql://u:p@db/mlflow"}).stdout.split()
    assert pg[pg.index("--backend-store-uri") + 1] == "postgresql://u:p@db/mlflow"


def test_celery_dash_a_app_finds_the_app() -> None:
    from celery.app.utils import find_app

    celery = find_app("app")
    assert celery.main == "qtrain"
    assert {q.name for q in celery.conf.task_queues} == {"gpu", "cpu"}


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= SERVICES
    for name, service in services.items():
        assert str(service.get("user", "")).split(":")[0] not in ("root", "0"), f"{name} runs as root"
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("$", ".", "/", "~")):
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).is_file()
    assert services["redis"]["image"].startswith("redis:")
    assert services["postgres"]["image"].startswith("postgres:")
    # one database server for MLflow and the task pool: nothing of MongoDB is left in the compose deployment
    assert not [name for name, s in services.items() if "mongo" in (name + str(s.get("image", ""))).lower()]
    assert "mongo" not in (DOCKER / "compose.yaml").read_text().lower()


def test_compose_qtrain_services_read_docker_env(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in QTRAIN_SERVICES:
        assert services[name]["env_file"] == ".env", name
    for name in (*WORKERS, "flower"):
        env = services[name]["environment"]
        assert env["QTRAIN_TASK_STORE"] == TASK_STORE
        assert env["QTRAIN_RESULT_BACKEND"] == "redis://redis:6379/1"
        assert env["QTRAIN_BROKER_URL"] == "redis://redis:6379/0"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert "QTRAIN_ARTIFACT_ROOT" not in env, "the MLflow server keeps the artifacts (--serve-artifacts)"


def test_compose_workers_take_their_queues(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in WORKERS:  # they claim tasks from the pool on postgres
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
    cpu = _command(services["worker-cpu"])
    assert cpu[cpu.index("-Q") + 1] == "cpu"
    for name in ("worker-gpu", "worker-gpu1"):
        gpu = services[name]
        words = _command(gpu)
        assert words[:4] == ["celery", "-A", "app", "worker"]
        assert words[words.index("-Q") + 1] == "gpu"
        assert words[words.index("-c") + 1] == "1", "a GPU worker runs one process: it owns one GPU"
        devices = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1 and devices[0]["driver"] == "nvidia" and len(devices[0]["device_ids"]) == 1
        assert "gpu" in devices[0]["capabilities"]
        # the container sees only its reserved GPU, as device 0
        assert gpu["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
        assert gpu["profiles"], "GPU workers are opt-in (--profile), so the stack starts on CPU-only hosts"
    ids = {services[n]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"][0] for n in WORKERS[1:]}
    assert ids == {"0", "1"}
    names = [_command(services[n])[_command(services[n]).index("-n") + 1] for n in WORKERS]
    assert len(set(names)) == len(names), "worker node names must differ"


def test_compose_flower_is_local_and_authenticated(compose: dict[str, Any]) -> None:
    services = compose["services"]
    flower = services["flower"]
    assert _command(flower)[:4] == ["celery", "-A", "app", "flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert not any(w.startswith("--basic") for w in _command(flower)), "the password stays out of argv"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
    assert flower["ports"]


def test_compose_mlflow_server_on_postgres(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    words = _command(mlflow)
    assert words[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in words
    assert any(w.startswith("--artifacts-destination=") for w in words)
    uri = mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert uri.startswith("postgresql://") and "${POSTGRES_PASSWORD" in uri and "@postgres:5432/" in uri
    allowed = next(w for w in words if w.startswith("--allowed-hosts="))
    assert "mlflow:5000" in allowed.split("=", 1)[1].split(","), "workers reach MLflow as Host mlflow:5000"
    assert any(":/var/lib/mlflow/artifacts" in v for v in mlflow["volumes"])
    # workers upload artifacts through the server: it shares no volume with them
    assert not any(v.startswith("qtrain-state:") for v in mlflow["volumes"])
    assert uri == f"postgresql://${{POSTGRES_USER:-mlflow}}:{PASSWORD}@postgres:5432/${{POSTGRES_DB:-mlflow}}"


def test_compose_postgres_creates_the_task_pool_database(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == PASSWORD
    mounts = [v for v in postgres["volumes"] if v.split(":")[1] == "/docker-entrypoint-initdb.d"]
    assert len(mounts) == 1
    scripts = sorted((DOCKER / mounts[0].split(":")[0]).iterdir())
    assert [s.name for s in scripts] == ["10-qtrain.sql"], "the image runs every *.sql / *.sh there, in name order"
    database = TASK_STORE.rsplit("/", 1)[1]
    assert database not in ("mlflow", "postgres"), "the task pool has a database of its own"
    assert re.search(rf"^CREATE DATABASE {database};$", scripts[0].read_text(), flags=re.M)
    # healthy only after the init scripts ran: the image's init-time server listens on no TCP address
    assert "pg_isready -h 127.0.0.1 " in postgres["healthcheck"]["test"][1]


def test_postgres_init_script_creates_the_database_on_a_real_server(postgres_server: str) -> None:
    """Run the init script with psql as the image does (``psql -v ON_ERROR_STOP=1 -f``), then open the task
    store on the database it made."""
    import shutil
    import uuid

    import psycopg

    from app.taskpool import open_pool

    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql (PostgreSQL's client, which the postgres image runs init scripts with) is not installed")
    name = f"qtrain_init_{uuid.uuid4().hex[:10]}"  # the script's database under a name of this test's own
    script = (DOCKER / "postgres-init" / "10-qtrain.sql").read_text().replace("DATABASE qtrain;", f"DATABASE {name};")
    out = subprocess.run(
        [psql, "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-d", postgres_server, "-f", "-"],
        input=script, capture_output=True, text=True,
    )  # fmt: skip
    try:
        assert out.returncode == 0, out.stderr
        pool = open_pool(postgres_server.rsplit("/", 1)[0] + f"/{name}")
        task, created = pool.submit("p", {"a": 1}, "h")  # qtrain makes its table on first use
        assert created and pool.get(task.id).spec == {"a": 1}
        pool.close()
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_compose_has_no_literal_secrets(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: write environment as a mapping"
        for key, value in env.items():
            if SECRET_KEY.search(key):
                assert str(value).startswith("${"), f"{name}: {key} must come from docker/.env"
            if "://" in str(value):
                userinfo = str(value).split("://", 1)[1].rpartition("@")[0]
                password = re.sub(r"\$\{[^}]*\}", "", userinfo).partition(":")[2]
                assert not password, f"{name}: {key} holds a literal password"


def test_compose_variables_are_in_env_example() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = (DOCKER / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, flags=re.M))
    assert used <= documented, f"add to docker/.env.example: {sorted(used - documented)}"
    for key in ("FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD"):
        assert re.search(rf"^{key}=$", example, flags=re.M), f"{key} must be empty in the example"
    # a path here would make the compose workers write artifacts beside the server instead of through it
    assert not re.search(r"^QTRAIN_ARTIFACT_ROOT=", example, flags=re.M)


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_run_as_non_root(name: str) -> None:
    lines = [line.strip() for line in (DOCKER / name).read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] == "qtrain"
    assert any("useradd" in line and "qtrain" in line for line in lines)
    assert any(line.startswith("COPY hydra_plugins") for line in lines)
    assert any(line.startswith("COPY") and "setup.py" in line for line in lines), "setup.py ships conf/ in the wheel"
    assert any(re.search(r"pip install --no-cache-dir \.(\s|$)", line) for line in lines)


def test_cuda_image() -> None:
    text = (DOCKER / "Dockerfile.cuda").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", text, flags=re.M)
    assert base and base.group(1).startswith(("nvidia/cuda:", "pytorch/pytorch:"))
    assert re.search(r"^ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cu\d+", text, flags=re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, flags=re.M)
    assert cmd and yaml.safe_load(cmd.group(1))[:6] == ["celery", "-A", "app", "worker", "-Q", "gpu"]
