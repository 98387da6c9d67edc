"""Bad input: one message naming the key, the bad value and what is allowed, before any compute."""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orthonoise import validate as validate_module
from orthonoise.errors import ConfigError
from orthonoise.validate import validate, validate_settings
from tests.conftest import FAST

BAD_INPUTS = [  # (overrides, what the message must say)
    (["optimizer=orthonoise", "optimizer.alpha=-0.1"], "optimizer.alpha=-0.1 is out of range: must be ≥ 0"),
    (["optimizer=orthonoise", "optimizer.rank_threshold=1.5"],
     "optimizer.rank_threshold=1.5 is out of range: must be in (0, 1]"),
    (["optimizer=isotropic", "optimizer.ns_steps_noise=0"],
     "optimizer.ns_steps_noise=0 is out of range: must be an integer ≥ 1"),
    (["optimizer=orthonoise", "noise=linear", "noise.end_factor=-1"],
     "noise.end_factor=-1 is out of range: must be ≥ 0"),
    (["optimizer=orthonoise", "noise=cosine", "noise.steps=0"], "noise.steps=0 is out of range: must be ≥ 1"),
    (["optimizer=nolah", "optimizer.percentile=100"], "optimizer.percentile=100 is out of range: must be in (0, 100)"),
    (["optimizer=orthonoise", "optimizer.alpha=1e-3x"], "optimizer.alpha='1e-3x' is out of range: must be a number"),
    (["optimizer._target_=orthonoise.optim.Nope"], "optimizer._target_='orthonoise.optim.Nope' cannot be imported"),
    (["optimizer.ns_steps=0"], "optimizer.ns_steps=0 is out of range: must be an integer ≥ 1"),
    (["optimizer.orthogonalizer=qr"], "optimizer.orthogonalizer='qr' is out of range: must be one of"),
    (["optimizer.ns_kernel=cublas"],
     "optimizer.ns_kernel='cublas' is out of range: must be one of ('torch', 'triton_symmetric')"),
    (["optimizer=orthonoise", "optimizer.ns_kernel=triton_symmetric"],
     "optimizer.ns_kernel='triton_symmetric' is out of range: must be torch on hardware.device=cpu"),
    (["optimizer.momentum=1.0"], "optimizer.momentum=1.0 is out of range: must be in [0, 1)"),
    (["optimizer.lr=-0.02"], "optimizer.lr=-0.02 is out of range: must be a number > 0"),
    (["optimizer=adamw", "optimizer.lr=0"], "optimizer.lr=0 is out of range: must be a number > 0"),
    (["adamw.lr=-1"], "adamw.lr=-1 is out of range: must be a number > 0"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 is out of range: must be an integer ≥ 1"),
    (["trainer.max_steps=1.5"], "trainer.max_steps=1.5 is out of range: must be an integer ≥ 1"),
    (["trainer.checkpoint_every=0"], "trainer.checkpoint_every=0 is out of range: must be an integer ≥ 1"),
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints=0 is out of range"),
    (["trainer.skip_nonfinite=-1"], "trainer.skip_nonfinite=-1 is out of range: must be an integer ≥ 0"),
    (["trainer.grad_clip=0"], "trainer.grad_clip=0 is out of range: must be a number > 0 or null"),
    (["trainer.lr_decay=step"], "trainer.lr_decay='step' is out of range: must be one of constant, linear, cosine"),
    (["trainer.min_lr_ratio=2"], "trainer.min_lr_ratio=2 is out of range: must be a number in [0, 1]"),
    (["hardware.batch_size=0"], "hardware.batch_size=0 is out of range: must be an integer ≥ 1"),
    (["hardware.grad_accum=-2"], "hardware.grad_accum=-2 is out of range"),
    (["hardware.precision=fp16"], "hardware.precision='fp16' is out of range: must be one of fp32, bf16"),
    (["data.seq_len=4096"], "data.seq_len=4096 is out of range: model=tiny supports at most 2048 tokens"),
    (["data.seq_len=1"], "data.seq_len=1 is out of range: must be an integer ≥ 2"),
    (["data.val_fraction=1.5"], "data.val_fraction=1.5 is out of range: must be a number in (0, 1)"),
    (["data.path=/no/such/folder"], "data.path='/no/such/folder' does not exist (expected a .txt file or a folder"),
    (["data=fineweb-edu"], "data.tokenizer is null: data=fineweb-edu uses the model's tokenizer (model.hub_id)"),
    (["model.config.num_attention_heads=5"],
     "model.config.num_attention_heads=5 is out of range: must divide model.config.hidden_size=192"),
    (["model.config.num_key_value_heads=4"],
     "model.config.num_key_value_heads=4 is out of range: must divide model.config.num_attention_heads=6"),
    (["model.config.hidden_size=-5"], "model.config.hidden_size=-5 is out of range: must be an integer ≥ 1"),
    (["model.config.mamba_n_heads=7"],
     "model.config (model=tiny) is inconsistent: ValueError: mamba_n_heads must divide"),
    (["model.config.attention_layers=[9]"],
     "model.config.attention_layers=[9] is out of range: must be a non-empty list of layer indices in [0, 4)"),
    (["optimizer=nolah", "optimizer.gate=maybe"], "optimizer.gate='maybe' is out of range: must be true or false"),
    (["hardware.world_size=2"], "hardware.world_size=2 (hardware=cpu) but 1 process(es) were launched"),
    (["seed=-3"], "seed=-3 is out of range: must be an integer in [0, 2^64)"),
    # typo keys (a `+` override or a sweep file adds them silently otherwise)
    (["+trainer.max_stepz=5"], "trainer.max_stepz=5 is not a setting (did you mean trainer.max_steps?): trainer takes"),
    (["+data.pth=x"], "data.pth='x' is not a setting (did you mean data.path?): data takes"),
    (["+hardware.batchsize=8"], "hardware.batchsize=8 is not a setting (did you mean hardware.batch_size?)"),
    (["+logger.projct=x"], "logger.projct='x' is not a setting (did you mean logger.project?)"),
    (["optimizer=orthonoise", "+noise.stepz=5"], "noise.stepz=5 is not a setting (did you mean noise.steps?)"),
    (["+model.config.hiden_size=5"],
     "model.config.hiden_size=5 is not a setting (did you mean model.config.hidden_size?)"),
    (["+model.preset_name=x"], "model.preset_name='x' is not a setting"),
    (["optimizer=muon", "+optimizer.alpah=1"],
     "optimizer.alpah=1 is not a setting: optimizer takes adjust_lr_fn, eps, lr, momentum"),
    (["optimizer=orthonoise", "+optimizer.alpah=1"],
     "optimizer.alpah=1 is not a setting (did you mean optimizer.alpha?)"),
    (["+adamw.beta=[0.9,0.9]"], "adamw.beta=[0.9, 0.9] is not a setting (did you mean adamw.betas?)"),
    # ... non-finite numbers, wherever they are set
    (["optimizer.lr=inf"], "optimizer.lr=inf is out of range: must be a finite number"),
    (["optimizer=orthonoise", "optimizer.alpha=nan"], "optimizer.alpha=nan is out of range: must be a finite number"),
    (["optimizer=orthonoise", "optimizer.alpha=inf"], "optimizer.alpha=inf is out of range: must be a finite number"),
    (["optimizer=isotropic", "optimizer.alpha=-inf"], "optimizer.alpha=-inf is out of range: must be a finite number"),
    (["optimizer.weight_decay=nan"], "optimizer.weight_decay=nan is out of range: must be a finite number"),
    (["adamw.weight_decay=nan"], "adamw.weight_decay=nan is out of range: must be a finite number"),
    (["adamw.lr=inf"], "adamw.lr=inf is out of range: must be a finite number"),
    (["adamw.betas=[nan,0.9]"], "adamw.betas=[nan, 0.9] is out of range: must be a finite number"),
    (["optimizer=orthonoise", "noise=linear", "noise.end_factor=nan"],
     "noise.end_factor=nan is out of range: must be a finite number"),
    (["trainer.diverge_loss=inf"], "trainer.diverge_loss=inf is out of range: must be a finite number"),
    (["optimizer.momentum=nan"], "optimizer.momentum=nan is out of range: must be a finite number"),
    # ... wrong types, out-of-range values and choices
    (["adamw.betas=[0.9]"], "adamw.betas=[0.9] is out of range: must be two numbers in [0, 1), e.g. [0.9, 0.95]"),
    (["adamw.betas=[0.9,1.5]"], "adamw.betas=[0.9, 1.5] is out of range: must be two numbers in [0, 1)"),
    (["optimizer=adamw", "optimizer.betas=[a,b]"],
     "optimizer.betas=['a', 'b'] is out of range: must be two numbers in [0, 1)"),
    (["seed=18446744073709551616"], "seed=18446744073709551616 is out of range: must be an integer in [0, 2^64)"),
    (["seed=1.5"], "seed=1.5 is out of range: must be an integer in [0, 2^64)"),
    (["data.vocab_size=0"], "data.vocab_size=0 is out of range: must be an integer ≥ 257"),
    (["data.vocab_size=-5"], "data.vocab_size=-5 is out of range: must be an integer ≥ 257"),
    (["data.vocab_size=1e4"], "data.vocab_size=10000.0 is out of range: must be an integer ≥ 257"),
    (["model.config.attention_layers=[-1]"],
     "model.config.attention_layers=[-1] is out of range: must be a non-empty list of layer indices in [0, 4)"),
    (["model.config.attention_layers=[]"], "model.config.attention_layers=[] is out of range"),
    (["model.config.attention_layers=[a]"], "model.config.attention_layers=['a'] is out of range"),
    (["model.config.attention_layers=2"], "model.config.attention_layers=2 is out of range"),
    (["hardware.device=tpu"], "hardware.device='tpu' is out of range: must be one of cpu, cuda"),
    (["logger.mode=bogus"], "logger.mode='bogus' is out of range: must be one of online, offline, disabled"),
    (["data.name=bogus"], "data.name='bogus' is out of range: must be one of fineweb-edu, local"),
    (["trainer.progress_bar=maybe"], "trainer.progress_bar='maybe' is out of range: must be true or false"),
    (["hardware.compile=yes please"], "hardware.compile='yes please' is out of range: must be true or false"),
    (["model.pretrained=maybe"], "model.pretrained='maybe' is out of range: must be true or false"),
    (["data.streaming=2"], "data.streaming=2 is out of range: must be true or false"),
    (["trainer.eval_every=null"], "trainer.eval_every=None is out of range: must be a number"),
    (["noise.steps=many"], "noise.steps='many' is out of range: must be a number"),
    (["data.seq_len=abc"], "data.seq_len='abc' is out of range: must be a number"),
    (["data.val_fraction=inf"], "data.val_fraction=inf is out of range: must be a finite number"),
    (["optimizer=orthonoise", "optimizer.rank_threshold=nan"],
     "optimizer.rank_threshold=nan is out of range: must be a finite number"),
    (["model.config.rms_norm_eps=nan"], "model.config.rms_norm_eps=nan is out of range: must be a finite number"),
    (["model.config.vocab_size=100"], "model.config.vocab_size=100 is out of range: must be ≥ data.vocab_size=8192"),
    (["tags=notalist"], "tags='notalist' is out of range: must be a list of strings"),
    (["phase=[1]"], "phase=[1] is out of range: must be a phase name such as '3.1', or null"),
    (["data.tokenizer=/no/such/tokenizer"], "data.tokenizer='/no/such/tokenizer' does not exist"),
    (["+optimizer.foreach=true"], "optimizer.foreach=True is not a setting: optimizer takes"),
    # ... folders that cannot be used (root ignores permission bits: /proc is read-only even for root)
    (["data.cache_dir=/proc/orthonoise-cache"], "data.cache_dir='/proc/orthonoise-cache' is not writable"),
    (["data.cache_dir=pyproject.toml"],
     "data.cache_dir='pyproject.toml' cannot be a folder: pyproject.toml is a file; choose a folder"),
    (["data.cache_dir=pyproject.toml/data"],
     "data.cache_dir='pyproject.toml/data' cannot be a folder: pyproject.toml is a file"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_names_key_value_and_what_is_allowed(compose_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*overrides))
    assert str(err.value).startswith(message)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_symmetric_is_refused_only_off_the_gpu(compose_cfg):
    validate_settings(compose_cfg("hardware=h100", "optimizer.ns_kernel=triton_symmetric"))


def test_a_gpu_preset_on_a_cpu_box(compose_cfg):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="hardware=h100 needs a CUDA GPU but none is visible here; use hardware=cpu"):
        validate(compose_cfg("hardware=h100"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub and an empty hub cache, whatever this machine has."""
    monkeypatch.setattr(validate_module.hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(validate_module.hub, "in_local_cache", lambda repo, kind="model": False)


def test_pretrained_weights_offline_say_how_to_get_them(compose_cfg, offline):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("model=granite-350m", "model.pretrained=true"))
    message = str(err.value)
    assert message.startswith("model.hub_id='ibm-granite/granite-4.0-h-350m-base' needs the Hugging Face hub")
    assert "hf download ibm-granite/granite-4.0-h-350m-base" in message and "model.pretrained=false" in message


def test_streaming_dataset_offline_says_how_to_make_it_local(compose_cfg, offline, monkeypatch):
    monkeypatch.setattr(validate_module.hub, "in_local_cache", lambda repo, kind="model": kind == "model")
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("data=fineweb-edu", "model=granite-350m"))
    message = str(err.value)
    assert message.startswith("data.path='HuggingFaceFW/fineweb-edu' needs the Hugging Face hub")
    assert "--repo-type dataset" in message and "data.streaming=false" in message and "data=local" in message


def test_hub_presets_pass_when_the_hub_is_reachable(compose_cfg, monkeypatch):
    monkeypatch.setattr(validate_module.hub, "hub_reachable", lambda: True)
    validate(compose_cfg("data=fineweb-edu", "model=granite-1b", "model.pretrained=true"))


@pytest.mark.parametrize("group,options", [
    ("optimizer", ["muon", "adamw", "orthonoise", "isotropic", "nolah"]),
    ("noise", ["constant", "linear", "exponential", "cosine"]),
    ("model", ["tiny", "granite-350m", "granite-1b"]),
])
def test_every_shipped_option_is_valid(compose_cfg, monkeypatch, group, options):
    monkeypatch.setattr(validate_module.hub, "hub_reachable", lambda: True)  # the granite presets load hub weights
    for option in options:
        validate(compose_cfg(f"{group}={option}", "optimizer=orthonoise" if group == "noise" else "seed=0"))


def test_the_trainer_validates_before_any_compute(compose_cfg, tmp_path, monkeypatch):
    from orthonoise import trainer

    def no_compute(*args, **kwargs):
        raise AssertionError("compute started before the config was checked")

    monkeypatch.setattr(trainer, "load_corpus", no_compute)
    monkeypatch.setattr(trainer, "build_model", no_compute)
    with pytest.raises(ConfigError, match="optimizer.alpha"):
        trainer.train(compose_cfg(*FAST, "optimizer=orthonoise", "optimizer.alpha=-1"), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_the_offline_dataset_remedy_works(compose_cfg, offline, monkeypatch, tmp_path):
    """Do what the error says: a folder laid out as `hf download --include 'sample/10BT/000_*'` leaves it, and the
    overrides the message names, then the config passes and the documents load."""
    import re

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orthonoise.lm.data import fineweb_texts

    monkeypatch.setattr(validate_module.hub, "in_local_cache", lambda repo, kind="model": kind == "model")
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("data=fineweb-edu", "model=granite-350m"))
    remedy = re.search(r"set (data\.path=DIR(?: \S+=\S+)*?);", str(err.value)).group(1).split()
    shard = tmp_path / "DIR" / "sample" / "10BT" / "000_00000.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.table({"text": [f"document {i}: water boils at 100 C. " * 5 for i in range(30)]}), shard)
    overrides = [o.replace("DIR", str(tmp_path / "DIR")) for o in remedy]
    cfg = compose_cfg("data=fineweb-edu", "model=granite-350m", "data.num_examples=12", *overrides)
    validate(cfg)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    texts = fineweb_texts(cfg.data)
    assert len(texts) == 12 and texts[3].startswith("document 3: water boils")


def test_a_local_dataset_folder_with_the_hub_config_name_says_how_to_fix_it(compose_cfg, tmp_path):
    from orthonoise.lm.data import fineweb_texts

    (tmp_path / "data.parquet").write_bytes(b"")  # any local folder: the config name is what fails
    cfg = compose_cfg("data=fineweb-edu", "model=granite-350m", f"data.path={tmp_path}", "data.streaming=false")
    with pytest.raises(ConfigError, match=r"BuilderConfig 'sample-10BT' not found.*needs data.config_name=null"):
        fineweb_texts(cfg.data)


# ---- Through the real entry point: one `error:` line, exit status 1, nothing computed ----
ROOT = Path(__file__).resolve().parents[1]


def run_train(*overrides: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *overrides, "logger=disabled", "trainer.progress_bar=false"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_error_line(out: subprocess.CompletedProcess, message: str) -> None:
    output = out.stdout + out.stderr
    errors = [line for line in output.splitlines() if "error:" in line]
    assert out.returncode == 1 and "Traceback" not in output, output
    assert len(errors) == 1 and message in errors[0], output


def _entry_point_cases(tmp: Path) -> list[tuple[list[str], str, Path]]:
    """(overrides, message, the directory that must hold no training output)."""
    (tmp / "a-file").write_text("not a folder")
    (tmp / "ckpt-run" / "checkpoints").parent.mkdir()
    (tmp / "ckpt-run" / "checkpoints").write_text("not a folder")
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp / "small.txt").write_text("too short.")
    run = tmp / "run"
    (tmp / "garbage-run").mkdir()
    (tmp / "garbage-run" / "summary.json").write_text("[1, 2]")  # a relaunch into a hand-edited run directory
    (tmp / "dangling").symlink_to(tmp / "gone")  # a run directory linked to a folder since removed
    return [
        (["optimizer.lr=inf", f"hydra.run.dir={tmp / 'garbage-run'}"], "error: optimizer.lr=inf is out of range: "
         "must be a finite number", tmp / "garbage-run"),
        (["+trainer.max_stepz=5", f"hydra.run.dir={run}"], "error: trainer.max_stepz=5 is not a setting", run),
        ([f"hydra.run.dir={tmp / 'a-file'}"], f"error: hydra.run.dir='{tmp / 'a-file'}' cannot be a folder", tmp),
        ([f"hydra.run.dir={tmp / 'a-file' / 'run'}"], f"cannot be a folder: {tmp / 'a-file'} is a file", tmp),
        (["hydra.run.dir=/proc/orthonoise-run"], "error: hydra.run.dir='/proc/orthonoise-run' is not writable", tmp),
        ([f"hydra.run.dir={tmp / 'ckpt-run'}"], "its checkpoints/ cannot be a folder", tmp / "ckpt-run"),
        (["-m", "seed=1,2", f"hydra.sweep.dir={tmp / 'a-file'}"], "error: hydra.sweep.dir=", tmp),
        ([f"data.path={tmp / 'binary.txt'}", f"hydra.run.dir={run}"], "is binary (a NUL byte at offset 0)", run),
        ([f"data.path={tmp / 'small.txt'}", f"data.cache_dir={tmp / 'cache'}", f"hydra.run.dir={run}"],
         "error: data.seq_len=128 is out of range for this corpus", run),
        ([f"hydra.run.dir={tmp / 'dangling' / 'run'}"],
         f"cannot be a folder: {tmp / 'dangling'} is a symbolic link to {tmp / 'gone'}, which does not exist", tmp),
    ]


@pytest.mark.parametrize("case", range(10))
def test_bad_input_through_train_py(tmp_path, case):
    overrides, message, output_dir = _entry_point_cases(tmp_path)[case]
    out = run_train(*overrides)
    _one_error_line(out, message)
    assert not list(output_dir.rglob("metrics.jsonl")) and not list(output_dir.rglob("*.pt"))  # nothing computed
    if (output_dir / "summary.json").exists():
        assert json.loads((output_dir / "summary.json").read_text())["status"] == "failed"


def test_a_typo_key_in_a_sweep_file_is_caught_by_the_preflight(tmp_path):
    from orthonoise.sweep.plan import expand, plan

    sweeps = tmp_path / "sweeps"
    shutil.copytree(ROOT / "sweeps", sweeps)
    arm = sweeps / "arm" / "orthonoise_best.yaml"  # an arm the sweep reads, as the generated ones are read
    typo = (sweeps / "arm" / "orthonoise.yaml").read_text().replace("alpha: 1.0e-3", "alpha: 1.0e-3\n  alpah: 2.0e-2")
    arm.write_text(typo)
    (sweeps / "arm" / "baseline_best.yaml").write_text((sweeps / "arm" / "baseline.yaml").read_text())
    tiny = ["+preset=tiny", "model=tiny", "data=local", "hardware=cpu", "logger=disabled"]
    jobs = expand("phase33_finetune", tiny, sweeps)
    with pytest.raises(ConfigError, match=r"^optimizer.alpah=0.02 is not a setting \(did you mean optimizer.alpha\?\)"):
        validate_settings(next(cfg for _, cfg in jobs if "arm=orthonoise_best" in _))
    planned = plan("phase33_finetune", tiny, tmp_path / "no-history", sweeps_dir=sweeps)
    assert [bool(job.invalid) for job in planned] == ["arm=orthonoise_best" in job.overrides for job in planned]
    assert all(job.invalid.startswith("optimizer.alpah=0.02 is not a setting") for job in planned if job.invalid)


def test_the_suggested_key_of_a_typo_is_valid(compose_cfg):
    import re

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("+trainer.max_stepz=50"))
    suggested = re.search(r"did you mean (\S+)\?", str(err.value)).group(1)
    validate(compose_cfg(f"{suggested}=50"))


def test_a_warmup_longer_than_the_run_is_clamped_with_one_warning(compose_cfg, caplog):
    from orthonoise.validate import clamp_warmup

    cfg = compose_cfg("trainer.max_steps=5")  # the default warmup is 20 steps
    clamp_warmup(cfg)
    clamp_warmup(cfg)  # the trainer calls it again after train.py: nothing more to say
    assert cfg.trainer.warmup_steps == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["trainer.warmup_steps=20 is more than trainer.max_steps=5: the learning rate warms up over "
                        "all 5 steps (trainer.warmup_steps=5)"]
    validate_settings(cfg)


def test_a_smoke_test_needs_only_max_steps(tmp_path):
    fast = [o for o in FAST if not o.startswith("trainer.warmup_steps")]
    out = run_train(*fast, "trainer.max_steps=2", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    assert "warmup_steps: 2" in (tmp_path / ".hydra" / "config.yaml").read_text()  # what it ran with
    assert sum("trainer.warmup_steps=20 is more than" in line for line in (out.stdout + out.stderr).splitlines()) == 1


def test_a_run_directory_on_a_full_disk_is_one_error_line_before_hydra_writes(tmp_path, monkeypatch):
    import errno
    import os

    def full(folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(validate_module, "_probe_write", full)
    with pytest.raises(ConfigError, match=rf"^hydra.run.dir='{tmp_path / 'run'}' is on a full disk \({tmp_path}: No "
                                          r"space left on device\): free space there, or choose a folder on another "
                                          r"disk$"):
        validate_module.check_run_dir(tmp_path / "run")
