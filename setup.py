"""Build hook: a wheel (or a plain ``pip install .``) carries the ``conf/`` tree as ``app/_conf``.

Everything else about the package is declared in pyproject.toml. A source checkout and an editable install read
``conf/`` where it is (``app.config.compose.conf_dir`` looks for ``app/_conf`` first, then ``conf/`` beside ``app``).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConf(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib, "app", "_conf")
        for source in sorted((ROOT / "conf").rglob("*.yaml")):
            destination = target / source.relative_to(ROOT / "conf")
            self.mkpath(str(destination.parent))
            self.copy_file(str(source), str(destination))


setup(cmdclass={"build_py": BuildPyWithConf})
