"""Will it fit? The memory preflight, the dry run, and an out-of-memory step (clipmed/preflight.py,
`python -m clipmed.main --dry_run`, train.py's step)."""

import os
import re
import subprocess
import sys

import jax
import pytest

from clipmed import errors, preflight, train
from tests.conftest import ROOT
from tests.test_train import _tiny as tiny_config

DRY_RUN_FIELDS = ("devices", "batch_size", "parameters", "flops_per_step",
                  "params_bytes_per_device", "opt_state_bytes_per_device",
                  "activation_bytes_per_device", "needed_bytes_per_device", "estimated_step_s")


def _tiny(data_dir, **overrides):
  config = tiny_config(data_dir, **overrides)
  config.evals = type(config.evals)()
  return config


def _dry_run(config_arg: str, *flags: str, timeout: int = 1800,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
  env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, **(env or {})}
  env.update(PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "clipmed.main", f"--config={config_arg}", "--workdir=unused",
       "--dry_run", *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
      check=False)


def _fields(stdout: str) -> dict[str, str]:
  return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


@pytest.mark.slow
def test_preflight_refuses_with_computed_advice_that_fits(tiny_data_dir, tmp_path):
  budget_gb = 0.002  # the tiny step needs about 3 MB at batch 8; its state about 0.3 MB
  config = _tiny(tiny_data_dir, **{"preflight.device_memory_gb": budget_gb})
  with pytest.raises(errors.ResourceError) as raised:
    train.train_and_evaluate(config, str(tmp_path / "work"))
  message = str(raised.value)
  assert "\n" not in message
  assert "available (config.preflight.device_memory_gb)" in message, message
  assert "model.remat=True" in message and "model.dtype=bfloat16 (" in message, message
  assert "grad_accum_steps=" in message and "preflight.enabled=False" in message, message
  largest = int(re.search(r"batch_size=(\d+) \(the largest that fits", message).group(1))
  assert 1 <= largest < 8, message
  # The advice is computed, so it holds: that batch fits the budget.
  cost_fn = preflight.make_cost_fn(vocab_size=300, num_classes=14)
  assert cost_fn(config, largest).needed_bytes <= budget_gb * preflight.GB
  assert not os.path.exists(tmp_path / "work" / "checkpoints" / "1")


@pytest.mark.slow
def test_dry_run_tiny_on_two_forced_devices_prepares_nothing(tmp_path):
  data_dir = tmp_path / "tfds"
  proc = _dry_run(f"configs/tiny.py:data_dir={data_dir}", "--devices=2", "--peak_tflops=0.05")
  assert proc.returncode == 0, proc.stderr[-3000:]
  fields = _fields(proc.stdout)
  assert set(DRY_RUN_FIELDS) <= set(fields), proc.stdout
  assert fields["devices"].startswith("2 x cpu") and fields["batch_size"].startswith("8 (4 per")
  assert int(fields["parameters"].replace(",", "")) > 1000
  assert float(fields["flops_per_step"]) > 1e6 and float(fields["estimated_step_s"].split()[0]) > 0
  assert int(fields["needed_bytes_per_device"]) > int(fields["params_bytes_per_device"]) > 0
  assert not data_dir.exists()  # shapes only: SynthCXR was not generated


@pytest.mark.slow
def test_dry_run_exits_2_with_advice_when_it_cannot_fit(tmp_path):
  proc = _dry_run(f"configs/tiny.py:data_dir={tmp_path}", "--peak_tflops=0.05",
                  "--config.preflight.device_memory_gb=0.0001")
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors_ = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors_) == 1 and "will not fit" in errors_[0], proc.stderr[-3000:]
  assert "no batch_size fits" in errors_[0], errors_[0]


@pytest.mark.slow
def test_dry_run_full_config_random_init_nothing_downloaded(tmp_path):
  hf_home = tmp_path / "hf_home"  # an empty Hugging Face cache, and no network (HF_HUB_OFFLINE)
  proc = _dry_run(f"configs/full.py:batch=8,data_dir={tmp_path / 'tfds'}", "--peak_tflops=0.2",
                  env={"HF_HOME": str(hf_home)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  fields = _fields(proc.stdout)
  assert set(DRY_RUN_FIELDS) <= set(fields), proc.stdout
  assert "Bio_ClinicalBERT' is not on disk: vocabulary size 30522 assumed" in fields["note"]
  # Swin-T (28M) + BERT-base with a 30,522-token vocabulary (110M) + graph encoder and heads.
  assert 130e6 < int(fields["parameters"].replace(",", "")) < 160e6, fields["parameters"]
  # Adam holds two moments per parameter.
  params, opt = int(fields["params_bytes_per_device"]), int(fields["opt_state_bytes_per_device"])
  assert 1.9 * params < opt < 2.1 * params
  assert not (tmp_path / "tfds").exists()
  downloaded = [n for _, _, names in os.walk(hf_home) for n in names]
  assert not downloaded, downloaded


@pytest.mark.slow
def test_out_of_memory_at_a_step_is_one_line_and_keeps_the_checkpoints(tiny_data_dir, tmp_path,
                                                                       monkeypatch):
  workdir = str(tmp_path / "work")
  train.train_and_evaluate(_tiny(tiny_data_dir, num_train_steps=3), workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  before = sorted((root, name, os.path.getsize(os.path.join(root, name)),
                   os.path.getmtime(os.path.join(root, name)))
                  for root, _, names in os.walk(checkpoints) for name in names)
  compile_and_check = train._compile_and_check  # pylint: disable=protected-access

  def out_of_memory_step(config, s):
    _, cost = compile_and_check(config, s)

    def step(state, batch, rng):  # what XLA raises when an allocation fails
      raise jax.errors.JaxRuntimeError(
          "RESOURCE_EXHAUSTED: Out of memory allocating 79604976256 bytes.\nmore detail")
    return step, cost

  monkeypatch.setattr(train, "_compile_and_check", out_of_memory_step)
  with pytest.raises(errors.ResourceError) as raised:
    train.train_and_evaluate(_tiny(tiny_data_dir, num_train_steps=6), workdir)
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith("out of device memory at step 4 (batch_size 8)"), message
  assert "Out of memory allocating 79604976256 bytes" in message
  assert "the last checkpoint is step 3" in message and "Options:" in message, message
  after = sorted((root, name, os.path.getsize(os.path.join(root, name)),
                  os.path.getmtime(os.path.join(root, name)))
                 for root, _, names in os.walk(checkpoints) for name in names)
  assert after == before
