"""bench/gpu.sh, the one script a lent GPU runs, rehearsed on the CPU (`--smoke`: tiny shapes, the tiny model): every
section runs and leaves the tables the GPU session reads, so a broken script is found here and not in the device's
few minutes. The rehearsal is marked gpu_smoke (minutes): `make gpu-smoke`, run by .ci/run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("tests", "runs350m", "optimizer", "preempt", "share", "runs1b")
DEVICE_FILES_LIMIT = 8  # the device tool brings back at most 8 files from $OUT


def gpu_sh(*args: str, out: Path, work: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "GPU_WORK": str(work), "PYTHON": sys.executable}
    return subprocess.run(["bash", "bench/gpu.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)


def test_an_unknown_section_is_one_error_line_before_anything_runs(tmp_path):
    proc = gpu_sh("--smoke", "tests", "runs2b", out=tmp_path / "out", work=tmp_path / "work")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: section 'runs2b' is not one of: tests runs350m optimizer preempt share runs1b"]
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out, work = tmp_path_factory.mktemp("gpu-out"), tmp_path_factory.mktemp("gpu-work")
    proc = gpu_sh("--smoke", out=out, work=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "runs.json").read_text())


@pytest.mark.gpu_smoke
def test_every_section_ends_clean_and_the_results_fit_the_device_tool(smoke):
    out, _ = smoke
    rows = [line.split("|")[1:3] for line in (out / "summary.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| section")]
    assert [(name.strip(), code.strip()) for name, code in rows] == [(s, "0") for s in SECTIONS]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= DEVICE_FILES_LIMIT, files
    assert "tests collected" in (out / "tests.txt").read_text()


@pytest.mark.gpu_smoke
def test_optimizer_tables_time_every_row_and_skip_the_cuda_only_ones(smoke):
    out, _ = smoke
    for name in ("optimizer_350m.md", "optimizer_1b.md"):
        text = (out / name).read_text()
        assert "| Muon |" in text and "| OrthoNoise sampler=polar |" in text
        assert "| Muon ns_kernel=triton_symmetric | — (needs CUDA)" in text
        assert "max |QᵀQ − I| of the polar sampler" in text


@pytest.mark.gpu_smoke
def test_runs_table_has_every_optimizer_completed_with_its_eval_and_rank_times(smoke):
    out, record = smoke
    jobs = record["runs"]["tiny"]["jobs"]
    assert set(jobs) == {"muon", "orthonoise", "isotropic", "nolah"}
    for name, job in jobs.items():
        assert job["status"] == "completed" and job["steps"] == 12, (name, job)
        assert job["step_s"] > 0 and job["eval_s"] > 0 and job["rank_s"] > 0 and job["final_eval_s"] > 0
    text = (out / "runs.md").read_text()
    assert "{model: tiny, optimizer: orthonoise, hardware: cpu, step_s:" in text  # step_times.yaml's rows


@pytest.mark.gpu_smoke
def test_twice_preempted_run_resumes_twice_and_ends_bit_identical(smoke):
    _, record = smoke
    preempt = record["preempt"]
    assert preempt["resumes"] == 2 and len(preempt["stopped_at"]) == 2
    assert preempt["stopped_at"][0] < preempt["stopped_at"][1] < 12
    assert (preempt["preempted"], preempt["straight"], preempt["comparison"]) == (
        "completed", "completed", "bit-identical")


@pytest.mark.gpu_smoke
def test_runs_sharing_a_device_finish_and_match_the_run_alone(smoke):
    _, record = smoke
    share = record["share"]
    assert share["1"]["statuses"] == ["completed"] and share["2"]["statuses"] == ["completed"] * 2
    assert share["2"]["alone_vs_shared"] == "bit-identical"
    assert share["1"]["runs_per_hour"] > 0 and share["2"]["runs_per_hour"] > 0
