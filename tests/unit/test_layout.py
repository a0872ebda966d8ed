"""Guards on the project's shape: settings read env in one place, README and CI stay in step."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_only_settings_reads_the_environment() -> None:
    offenders = []
    for path in [*ROOT.glob("app/**/*.py"), *ROOT.glob("tasks/**/*.py")]:
        if path.name == "settings.py" and path.parent.name == "core":
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
    from app.core.settings import ENV_VARS

    example = (ROOT / "docker" / ".env.example").read_text()
    for key in ENV_VARS:
        assert key in example, f"{key} missing from docker/.env.example"


LIBRARY = ("core", "data", "features", "dataset", "models", "evaluation", "tracking", "taskpool", "workflow")
EDGE = ("cli", "config", "distributed")  # with app/celery.py and app/runtime.py: the only modules of app that
# import Hydra or Celery, or that build the process's wiring objects


def test_library_packages_do_not_import_hydra_or_celery() -> None:
    assert {p.name for p in (ROOT / "app").iterdir() if (p / "__init__.py").exists()} == {*LIBRARY, *EDGE}
    offenders = []
    for path in (p for name in LIBRARY for p in (ROOT / "app" / name).rglob("*.py")):
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


def _app_imports() -> dict[str, set[str]]:
    """Each module of app -> the modules of app it imports when it runs (function-level imports included,
    ``if TYPE_CHECKING:`` blocks not)."""
    import ast

    def name(path: Path) -> str:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in (ROOT / "app").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for n in ast.walk(stmt)
        }
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}  # fmt: skip
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[module] = {m for m in found if m in modules and m != module and not module.startswith(m + ".")}
    return graph


def test_no_import_cycle_in_app() -> None:
    graph = _app_imports()
    cycles = []
    for start in graph:  # a path back to the module it starts from
        stack, seen = [(start, [start])], set()
        while stack:
            module, path = stack.pop()
            for nxt in graph[module]:
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_core_imports_nothing_else_of_app() -> None:
    graph = _app_imports()
    offenders = {m: sorted(d for d in deps if not d.startswith("app.core")) for m, deps in graph.items()
                 if m.startswith("app.core")}  # fmt: skip
    assert {m: d for m, d in offenders.items() if d} == {}


def test_wiring_objects_are_built_in_one_place() -> None:
    # the tracking manager, feature cache, Celery app and broker, task store and pool worker of a process: built in
    # app/runtime.py only (the R facade builds its own manager from its own settings loader; library classes build
    # what they own, e.g. TrainerRM's client-side worker)
    built = re.compile(r"\b(ExpManager|FeatureCache|CeleryBroker|make_app|open_pool)\(")
    allowed = {
        "app/runtime.py",
        "app/tracking/facade.py",
        "app/taskpool/__init__.py",
        "app/distributed/celery_config.py",
        "app/tracking/manager.py",
        "app/dataset/cache.py",
    }
    offenders = sorted(
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in [*ROOT.glob("app/**/*.py"), *ROOT.glob("hydra_plugins/**/*.py"), *ROOT.glob("tasks/*.py")]
        if str(path.relative_to(ROOT)) not in allowed
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith(("#", "def ", "class "))
        for match in [built.search(line)]
        if match and "``" not in line
    )
    assert offenders == []


def test_task_names_live_in_one_place() -> None:
    literals = [p for p in [*ROOT.glob("app/**/*.py"), *ROOT.glob("tasks/*.py")] if '"qtrain.train"' in p.read_text()]
    assert [str(p.relative_to(ROOT)) for p in literals] == ["app/distributed/broker.py"]
