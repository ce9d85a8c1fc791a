"""The train step and the whole loop on configs/tiny.py: learning, resume, devices, CLIs."""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from clipmed import train, train_step
from configs import tiny
import input_pipeline
from tests.conftest import ROOT, read_scalars, run_with_devices


def _tiny(data_dir, **overrides):
  config = tiny.get_config(f"data_dir={data_dir}")
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config


def test_loss_falls_on_a_fixed_batch(tiny_data_dir):
  config = _tiny(tiny_data_dir, **{"optimizer.learning_rate": 3e-3, "num_train_steps": 40})
  s = train.setup(config)
  it = input_pipeline.create_train_iterator(
      config.data, source=s.dataset.source("train"), tokenizer=s.dataset.tokenizer,
      global_batch_size=config.batch_size, seed=0)
  batch = input_pipeline.make_global(next(it), s.mesh, s.data_axes)
  step = jax.jit(functools.partial(train_step.train_step, model=s.model,
                                   loss_fn=train.make_loss_fn(config.loss, s.mesh, s.data_axes),
                                   schedule=s.schedule))
  state, losses = s.state, []
  for _ in range(40):
    state, metrics, _ = step(state, batch, s.train_rng)
    losses.append(float(metrics.compute()["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.6 * losses[0], losses  # an untrained model sits at 2 ln(B) = 4.2


def _run(args, **kwargs):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, **kwargs)


@pytest.mark.slow
def test_end_to_end_tiny_run_then_evaluate_cli_reproduces_results(tiny_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  config_arg = f"--config=configs/tiny.py:data_dir={tiny_data_dir}"
  proc = _run(["-m", "clipmed.main", config_arg, f"--workdir={workdir}"], timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert "zero_shot/synth_cxr/mean_auroc" in results
  assert "retrieval/synth_cxr/recall@10" in results
  assert set(results["retrieval/synth_cxr/recall@10"]) == {"value", "ci_low", "ci_high"}
  losses = read_scalars(workdir, "train/loss")
  assert sorted(losses) == [2, 4, 6] and all(np.isfinite(list(losses.values())))
  assert read_scalars(workdir, "train/learning_rate")
  assert read_scalars(workdir, "train/logit_scale")

  os.remove(os.path.join(workdir, "results.json"))
  proc = _run(["-m", "clipmed.evaluate", config_arg, f"--workdir={workdir}"], timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "zero_shot" in proc.stdout
  with open(os.path.join(workdir, "results.json")) as f:
    again = json.load(f)
  assert again == results


@pytest.mark.slow
def test_resume_after_sigterm_gives_the_losses_of_an_uninterrupted_run(tiny_data_dir, tmp_path):
  steps = 60
  args = [f"--config=configs/tiny.py:data_dir={tiny_data_dir},steps={steps}",
          "--config.log_every_steps=1", "--config.checkpoint_every_steps=1000",
          "--config.evals.zero_shot.every_steps=0"]
  straight = str(tmp_path / "straight")
  proc = _run(["-m", "clipmed.main", *args, f"--workdir={straight}"], timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  expected = read_scalars(straight, "train/loss")
  assert sorted(expected) == list(range(1, steps + 1))

  interrupted = str(tmp_path / "interrupted")
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  child = subprocess.Popen([sys.executable, "-m", "clipmed.main", *args,
                            f"--workdir={interrupted}"], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  for line in child.stderr:  # absl logs to stderr; send SIGTERM once training is under way
    if "train/loss" in line and "] [" in line or time.time() > deadline:
      child.send_signal(signal.SIGTERM)
      break
  _, err = child.communicate(timeout=600)
  assert child.returncode == 0, err[-4000:]
  stopped = read_scalars(interrupted, "train/loss")
  assert max(stopped) < steps, "the run finished before SIGTERM arrived"
  assert not os.path.exists(os.path.join(interrupted, "results.json"))

  proc = _run(["-m", "clipmed.main", *args, f"--workdir={interrupted}"], timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  resumed = read_scalars(interrupted, "train/loss")
  assert sorted(resumed) == list(range(1, steps + 1))
  for step in range(1, steps + 1):
    assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), step


_LOSSES_OF_A_RUN = """
import json, sys
from configs import tiny
from clipmed import train
from tests.conftest import read_scalars
config = tiny.get_config("data_dir={data_dir},steps=4")
config.log_every_steps = 1
config.evals = type(config.evals)()
train.train_and_evaluate(config, "{workdir}")
print(json.dumps(read_scalars("{workdir}", "train/loss")))
"""


@pytest.mark.slow
def test_eight_devices_train_like_one(tiny_data_dir, tmp_path):
  out = {}
  for devices in (1, 8):
    code = _LOSSES_OF_A_RUN.format(data_dir=tiny_data_dir, workdir=tmp_path / f"d{devices}")
    stdout = run_with_devices(code, num_devices=devices)
    out[devices] = {int(k): v for k, v in json.loads(stdout.strip().splitlines()[-1]).items()}
  assert sorted(out[1]) == [1, 2, 3, 4]
  for step, loss in out[1].items():
    assert out[8][step] == pytest.approx(loss, rel=1e-4, abs=1e-5), (step, out)
