"""A real install: the wheel built from the repo's files, in fresh venvs outside the repo.

The wheel is built from a copy of the files git knows (tracked, or new and
not ignored), as ``pip wheel`` builds it for a user, with build isolation.
Each venv is made without pip and without system site-packages; the
project's pip installs the wheel into it with its dependencies (from the
package index, or pip's cache of it), so nothing of the checkout or of the
test venv is visible to it. Every command runs from a folder outside the
repo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.helpers import TextRedis, wait_until
from tests.spawn_harness import ROOT, WORKERS, SpawnerProc
from tests.test_demo import assert_table, run_demo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # pip at a loaded moment

INSTALL_TIMEOUT_S = 300.0
# The files besides modules that a run needs, as the repo holds them and
# where the wheel must carry them.
PACKAGE_DATA = ("orchestrator/lua/*.lua", "orchestrator/apps/batch/lua/*.lua")
DASHBOARD = ("orchestrator/dashboard/static/*.*", "orchestrator/dashboard/static/vendor/*")
SHIPPED = ("config/workers.yaml", "workers/*.py", "samples/announcements/*")
SHIPPED_IN = "orchestrator/shipped_files"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted in the work tree is not
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip(["wheel", "--no-deps", "-w", str(dist), str(source)])
    (built,) = dist.glob("redis_orchestrator-*.whl")
    return built


def pip(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        env=outside_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def fresh_venv(where: Path, requirement: str) -> Path:
    """A venv of its own at ``where`` with ``requirement`` installed; its bin/."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    pip(["--python", str(where / "bin" / "python"), "install", requirement])
    return where / "bin"


def outside_env(**extra: str) -> dict[str, str]:
    """Our environment without what would point a process at the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    return {**env, **extra}


def orch(bin_dir: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "orchestrator"), *args],
        cwd=cwd,
        env=outside_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def core(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A core-only install: the wheel without extras."""
    return fresh_venv(tmp_path_factory.mktemp("venvs") / "core", str(wheel))


def test_the_wheel_carries_every_file_a_run_needs(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = [str(p.relative_to(ROOT)) for g in PACKAGE_DATA + DASHBOARD for p in ROOT.glob(g)]
    shipped = [f"{SHIPPED_IN}/{p.relative_to(ROOT)}" for g in SHIPPED for p in ROOT.glob(g)]
    assert len(wanted) >= 10 and len(shipped) >= 10
    assert not [n for n in wanted + shipped if n not in names]


def test_core_install_runs_every_command_from_outside_the_repo(
    core: Path, tmp_path: Path, redis_url: str, r: TextRedis
) -> None:
    where = subprocess.run(
        [str(core / "python"), "-c", "import orchestrator; print(orchestrator.__file__)"],
        cwd=tmp_path,
        env=outside_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(core.parent / "lib"))
    version = orch(core, tmp_path, "--version")
    expected = metadata.version("redis-orchestrator")
    assert version.stdout.strip() == f"orchestrator, version {expected}"
    shutil.copy(WORKERS / "job_worker.py", tmp_path / "job_worker.py")
    queues = {"jobs": {"label": "JOBS", "script": str(tmp_path / "job_worker.py")}}
    sp = SpawnerProc(tmp_path, redis_url, queues)
    sp.command, sp.cwd = [str(core / "orchestrator")], tmp_path
    config = str(sp.config_path)
    checked = orch(core, tmp_path, "check", "-c", config)
    assert checked.returncode == 0 and "JOBS" in checked.stdout, checked.stderr
    try:
        sp.start()
        added = orch(core, tmp_path, "enqueue", "-c", config, "jobs", '{"id": "one"}')
        assert added.returncode == 0, added.stderr
        wait_until(lambda: r.sismember("test:done", "one"), 30, message=sp.text)
        status = orch(core, tmp_path, "status", "-c", config)
        assert status.returncode == 0 and "JOBS" in status.stdout, status.stderr
        streams = orch(core, tmp_path, "streams", "-c", config)
        assert streams.returncode == 0 and "jobs" in streams.stdout, streams.stderr
        assert sp.stop() == 0, sp.text()
    finally:
        sp.kill_everything()


def test_core_install_says_which_extra_an_app_needs(core: Path, tmp_path: Path) -> None:
    demo = orch(core, tmp_path, "demo")
    assert demo.returncode == 1
    assert "pip install 'redis-orchestrator[announcements]'" in demo.stderr
    batch = orch(core, tmp_path, "batch", "status")
    assert batch.returncode == 1 and "redis-orchestrator[batch]" in batch.stderr
    board = orch(core, tmp_path, "dashboard", "-c", str(ROOT / "config" / "workers.yaml"))
    assert board.returncode == 1 and "redis-orchestrator[dashboard]" in board.stderr


def test_demo_runs_from_an_installed_wheel(wheel: Path, tmp_path: Path, redis_url: str) -> None:
    bin_dir = fresh_venv(tmp_path / "venv", f"{wheel}[announcements]")
    here = tmp_path / "elsewhere"
    here.mkdir()
    run = run_demo(
        tmp_path, {"ORCH_REDIS_URL": redis_url}, command=[str(bin_dir / "orchestrator")], cwd=here
    )
    assert run.code == 0, run.output
    assert_table(run.output)
    assert (here / "var" / "demo.db").is_file()
