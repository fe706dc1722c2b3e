"""Build hook: the shipped run configs (configs/*.toml, *.yaml) travel in the wheel as package
data ``iha/configs``, so ``iha train cpu-demo`` finds its preset in an installed package too.
Everything else about the build is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "iha" / "configs"
        target.mkdir(parents=True, exist_ok=True)
        for pattern in ("*.toml", "*.yaml", "*.yml"):
            for config in sorted((HERE / "configs").glob(pattern)):
                shutil.copy2(config, target / config.name)


setup(cmdclass={"build_py": BuildWithConfigs})
