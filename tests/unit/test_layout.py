"""Guards on the project's shape: settings read env in one place, README and CI stay in step."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_only_settings_reads_the_environment() -> None:
    offenders = []
    for path in [*ROOT.glob("app/**/*.py"), *ROOT.glob("tasks/**/*.py")]:
        if path.name == "settings.py" and path.parent.name == "app":
            continue
        text = path.read_text()
        if re.search(r"os\.environ|os\.getenv|getenv\(", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r'^TEST_COMMAND="(.+)"$', ci, flags=re.M)
    assert match, ".ci/run must define TEST_COMMAND"
    readme = (ROOT / "README.md").read_text()
    assert match.group(1) in readme


def test_console_script_and_layout() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["qtrain"] == "app.cli:console"
    for name in ("app", "tasks", "conf", "tests", "docker", "benchmarks", "hydra_plugins", "Procfile", "README.md"):
        assert (ROOT / name).exists(), name
    # hydra_plugins must stay a namespace package, or it hides every other installed Hydra plugin
    assert not (ROOT / "hydra_plugins" / "__init__.py").exists()


def test_every_env_var_is_documented() -> None:
    from app.settings import ENV_VARS

    example = (ROOT / "docker" / ".env.example").read_text()
    for key in ENV_VARS:
        assert key in example, f"{key} missing from docker/.env.example"


def test_library_packages_do_not_import_hydra_or_celery() -> None:
    offenders = []
    for path in ROOT.glob("app/*/**/*.py"):
        text = path.read_text()
        if re.search(r"^\s*(import|from)\s+(hydra|celery|tasks)\b", text, flags=re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_no_pickle_in_app() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.glob("app/**/*.py")
        if re.search(r"^\s*(import|from)\s+(pickle|cloudpickle|dill|joblib)\b|torch\.save\(", p.read_text(), flags=re.M)
    ]
    assert offenders == []
