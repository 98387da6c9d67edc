""".ci/run without a cluster or the test suite: a copy of the script in a scratch checkout whose `.ci/slurm.sh` and
`make test` are stand-ins that record what they are asked to do."""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orthonoise import REPO_ROOT

FAKE_SLURM = """#!/usr/bin/env bash
echo "$1" >> "$(dirname "$0")/../slurm.calls"
[[ $1 == answers ]] && exit "${FAKE_CLUSTER_ANSWERS:-1}"
exit 0
"""
# `make test` stands in as a Python process that writes its pid and sleeps (as pytest would run); `make
# rehearsal-test` and `make gpu-smoke`, which .ci/run runs after it, record that they ran
MAKEFILE = ("test:\n\tpython3 -c 'import os, time; open(\"tests.pid\", \"w\").write(str(os.getpid())); "
            "time.sleep(float(os.environ[\"NAP\"]))'\n"
            "rehearsal-test:\n\ttouch rehearsal.ran\n"
            "gpu-smoke:\n\ttouch gpu-smoke.ran\n")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO_ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / ".ci" / "slurm.sh").write_text(FAKE_SLURM)
    (tmp_path / "Makefile").write_text(MAKEFILE)
    return tmp_path


def calls(checkout: Path) -> list[str]:
    return (checkout / "slurm.calls").read_text().split()


def ci_run(checkout: Path, answers: int, nap: float = 0) -> subprocess.Popen:
    env = {**os.environ, "FAKE_CLUSTER_ANSWERS": str(answers), "NAP": str(nap)}
    return subprocess.Popen(["bash", str(checkout / ".ci" / "run")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_cluster_that_already_answers_is_used_and_left_running(checkout):
    proc = ci_run(checkout, answers=0)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert calls(checkout) == ["answers"] and "already answers" in out


def test_a_cluster_it_started_is_stopped(checkout):
    proc = ci_run(checkout, answers=1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert calls(checkout) == ["answers", "start", "stop"]
    assert (checkout / "rehearsal.ran").exists()  # the whole-plan rehearsal runs after the test suite
    assert (checkout / "gpu-smoke.ran").exists()  # and the GPU measurement script rehearsed on the CPU


def test_sigterm_stops_the_tests_and_the_cluster_it_started(checkout):
    proc = ci_run(checkout, answers=1, nap=60)
    deadline = time.time() + 30
    while not (checkout / "tests.pid").exists() or not (checkout / "tests.pid").read_text():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    tests_pid = int((checkout / "tests.pid").read_text())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143, out
    for _ in range(50):  # the stand-in for pytest is gone, not left running
        if not Path(f"/proc/{tests_pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{tests_pid}").exists()
    assert calls(checkout) == ["answers", "start", "stop"]
