"""The wheel's one build step beyond pyproject.toml: it ships the repo's
example config, the worker programs that config names, and the demo's
samples (``SHIPPED``), under ``orchestrator/shipped_files/`` and laid out as
in the repo, so ``orchestrator demo`` runs from an installed wheel as from a
checkout (``orchestrator.shipped``). An editable install uses the repo's own.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("config/workers.yaml", "workers/*.py", "samples/announcements/*")
TARGET = Path("orchestrator", "shipped_files")


class BuildWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for pattern in SHIPPED:
            for source in sorted(Path().glob(pattern)):
                target = Path(self.build_lib) / TARGET / source
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildWithShippedFiles})
