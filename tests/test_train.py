"""The train step and the whole loop on configs/tiny.py: learning, resume, devices, CLIs."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from clipmed import errors, train, train_step
from configs import common, tiny
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


def _first_batch_and_step(config):
  s = train.setup(config)
  it = input_pipeline.create_train_iterator(
      config.data, source=s.dataset.source("train"), tokenizer=s.dataset.tokenizer,
      spec=s.batch_spec, class_names=s.dataset.class_names, global_batch_size=config.batch_size,
      seed=0)
  batch = input_pipeline.make_global(next(it), s.mesh, s.data_axes)
  step = jax.jit(functools.partial(train_step.train_step, model=s.model,
                                   loss_fn=s.make_loss_fn(), schedule=s.schedule))
  return s, batch, step


def test_loss_falls_on_a_fixed_batch(tiny_data_dir):
  config = _tiny(tiny_data_dir, **{"optimizer.learning_rate": 3e-3, "num_train_steps": 40})
  s, batch, step = _first_batch_and_step(config)
  state, losses = s.state, []
  for _ in range(40):
    state, metrics, _ = step(state, batch, s.train_rng)
    losses.append(float(metrics.compute()["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < 0.6 * losses[0], losses  # an untrained model sits at 2 ln(B) = 4.2


def test_a_non_finite_step_changes_no_parameter(tiny_data_dir):
  config = _tiny(tiny_data_dir)
  common.apply_row(config, "clip_ng_dtcg")  # the full method: negatives, graphs, three streams
  s, batch, step = _first_batch_and_step(config)
  state, metrics, info = step(s.state, batch, s.train_rng)
  assert bool(info["finite"]) and float(metrics.compute()["skipped_steps"]) == 0.0
  assert len(info["terms"]) == 18  # 6 directed pairs x 3 streams
  poisoned = dict(batch, image=batch["image"].at[1].set(np.nan))
  after, metrics, info = step(state, poisoned, s.train_rng)
  assert not bool(info["finite"])
  assert int(after.step) == int(state.step) + 1  # the step counts the batch it consumed
  for old, new in zip(jax.tree.leaves((state.params, state.opt_state)),
                      jax.tree.leaves((after.params, after.opt_state))):
    np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
  assert int(metrics.loss.count) == 0 and float(metrics.skipped_steps.total) == 1.0


class _Poisoned:
  """A train iterator whose batches at the given (1-based) steps have a NaN image row."""

  def __init__(self, iterator, steps):
    self._iterator, self._steps, self._count = iterator, set(steps), 0

  def __iter__(self):
    return self

  def __next__(self):
    self._count += 1
    batch = next(self._iterator)
    if self._count in self._steps:
      image = np.array(batch["image"])
      image[0] = np.nan
      batch = dict(batch, image=image)
    return batch

  def get_state(self):  # bytes: grain's checkpoint handler stores them as they are
    return json.dumps(self._iterator.get_state()).encode()

  def set_state(self, state):
    self._iterator.set_state(json.loads(state))


def _poison(monkeypatch, steps):
  create = input_pipeline.create_train_iterator
  monkeypatch.setattr(input_pipeline, "create_train_iterator",
                      lambda *a, **kw: _Poisoned(create(*a, **kw), steps))


def test_full_method_logs_every_loss_term_and_skipped_steps(tiny_data_dir, tmp_path,
                                                            monkeypatch):
  config = _tiny(tiny_data_dir, num_train_steps=6, log_every_steps=3)
  common.apply_row(config, "clip_ng_dtcg")
  config.evals = type(config.evals)()
  _poison(monkeypatch, steps=[2])
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  assert read_scalars(workdir, "train/skipped_steps") == {3: 1.0, 6: 0.0}
  loss = read_scalars(workdir, "train/loss")
  assert sorted(loss) == [3, 6] and all(np.isfinite(list(loss.values())))
  terms = {}
  for pair in ("I->T", "T->I", "I->G", "G->I", "T->G", "G->T"):
    for stream in ("text", "clinical", "graph"):
      terms[f"{pair}/{stream}"] = read_scalars(workdir, f"train/loss_terms/{pair}/{stream}")
  for step in (3, 6):  # the terms add up to the total, averaged over the same (finite) steps
    assert sum(t[step] for t in terms.values()) == pytest.approx(loss[step], rel=1e-5)


def test_consecutive_non_finite_steps_stop_the_run_with_the_last_checkpoint(
    tiny_data_dir, tmp_path, monkeypatch):
  config = _tiny(tiny_data_dir, num_train_steps=12, checkpoint_every_steps=3,
                 max_consecutive_nonfinite_steps=3)
  config.evals = type(config.evals)()
  _poison(monkeypatch, steps=range(5, 13))
  workdir = str(tmp_path / "run")
  with pytest.raises(errors.NonFiniteError) as err:
    train.train_and_evaluate(config, workdir)
  message = str(err.value)
  assert "training stopped at step 7: 3 consecutive steps" in message
  assert "I->T/text" in message  # the non-finite loss terms are named
  assert f"last good checkpoint is step 6 in {workdir}" in message


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


_LOSSES_OF_RUNS = """
import json, sys
from clipmed import sharding, train
from configs import common, tiny
from tests.conftest import read_scalars
out = {{}}
for name, mesh in {meshes}:
  config = tiny.get_config("data_dir={data_dir},steps=4,evals=none")
  common.apply_row(config, "clip_ng_dtcg")  # negatives, graphs and all three streams
  config.log_every_steps = 1
  if mesh == "data_x_fsdp":  # parameters sharded over fsdp, the batch over data
    config.mesh.shape = dict(data=4, fsdp=2)
    config.mesh.rules = [(sharding.BATCH, "data"), (sharding.EMBED, "fsdp"),
                         (sharding.MLP, "fsdp")]
  train.train_and_evaluate(config, "{workdir}/" + name)
  out[name] = read_scalars("{workdir}/" + name, "train/loss")
print(json.dumps(out))
"""


@pytest.mark.slow
def test_eight_devices_on_a_two_axis_mesh_train_like_one(tiny_data_dir, tmp_path):
  """The full method on 8 devices, the batch over 4 and the parameters over 2 (fsdp), gives one
  device's losses: data parallelism and sharded parameters at once. (One process with 8 devices
  on the data axis alone is compared with two processes of 4 in tests/test_faults.py.)"""
  out = {}
  for devices, meshes in ((1, [("one", "data")]), (8, [("data_x_fsdp", "data_x_fsdp")])):
    code = _LOSSES_OF_RUNS.format(data_dir=tiny_data_dir, workdir=tmp_path, meshes=meshes)
    stdout = run_with_devices(code, num_devices=devices)
    for name, losses in json.loads(stdout.strip().splitlines()[-1]).items():
      out[name] = {int(k): v for k, v in losses.items()}
  assert sorted(out["one"]) == [1, 2, 3, 4]
  for step, loss in out["one"].items():
    assert out["data_x_fsdp"][step] == pytest.approx(loss, rel=1e-4, abs=1e-5), (step, out)


def test_a_mixture_with_only_normal_studies_trains(tiny_data_dir, tmp_path):
  """configs/imbalance.py's SynthCXR setting on the tiny data: the normal_only part holds only
  studies without findings, and training on the mixture runs."""
  from clipmed.report import chexpert  # pylint: disable=g-import-not-at-top
  config = tiny.get_config(f"data_dir={tiny_data_dir},steps=3,evals=none")
  config.data.mixture = [dict(name="synth_cxr", weight=1.0, options={}, normal_only=False),
                         dict(name="synth_cxr", weight=1.0, options={}, normal_only=True)]
  dataset = input_pipeline.open_dataset(config.data)
  (whole, _), (normal, _) = input_pipeline.datasets.mixture_sources(config.data, dataset)
  labels = np.stack([np.asarray(normal[i]["labels"]) for i in range(len(normal))])
  assert 0 < len(normal) < len(whole)
  assert np.all(labels[:, chexpert.NO_FINDING] == 1.0)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  assert sorted(read_scalars(str(tmp_path / "run"), "train/loss")) == [2, 3]
