"""The README's commands and Python snippets work as written (run in a scratch copy of the working dir)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
pytestmark = pytest.mark.slow


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _qtrain_commands() -> list[str]:
    commands = []
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("qtrain "):
                commands.append(line)
    return commands


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("readme")
    (work / "tests").mkdir()
    (work / "tests" / "data").symlink_to(ROOT / "tests" / "data")
    return work


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QTRAIN_")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_readme_qtrain_commands(workdir: Path) -> None:
    qtrain = Path(sys.executable).with_name("qtrain")
    commands = _qtrain_commands()
    assert any(c.startswith("qtrain data import") for c in commands)
    demo = _run([str(qtrain), "demo"], workdir)  # the sample market the feature commands read
    assert demo.returncode == 0, demo.stderr
    for command in commands:
        out = _run([str(qtrain), *shlex.split(command)[1:]], workdir)
        assert out.returncode == 0, f"{command}\n{out.stderr[-2000:]}"


def test_readme_python_snippets(workdir: Path) -> None:
    for snippet in _blocks("python"):
        out = _run([sys.executable, "-c", snippet.replace('"~/.qlib/qlib_data/cn_data"', '".qtrain/data/sample"')
                    .replace('market="csi300"', 'market="synth"').replace('"2020-08-01"', '"2020-06-01"')],
                   workdir)  # fmt: skip
        assert out.returncode == 0, f"{snippet}\n{out.stderr[-2000:]}"
