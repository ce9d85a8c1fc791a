"""Same config and seed -> the same model: from an empty data_dir, in fresh processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clipmed import errors, train
from configs import tiny
from input_pipeline import tokenizer as tokenizer_lib
from tests.conftest import ROOT, read_scalars


@pytest.mark.slow
def test_two_runs_from_scratch_are_bit_identical(tmp_path):
  """Each run prepares SynthCXR (tokenizer included) into its own empty data_dir in a fresh
  process, trains and evaluates; the per-step losses and results.json must be identical."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  runs = []
  for name, deterministic in (("a", False), ("b", True)):  # the GPU switch changes nothing here
    workdir = tmp_path / f"run_{name}"
    proc = subprocess.run(
        [sys.executable, "-m", "clipmed.main",
         f"--config=configs/tiny.py:data_dir={tmp_path / f'data_{name}'},steps=8",
         "--config.log_every_steps=1", "--config.checkpoint_every_steps=4",
         f"--config.deterministic={deterministic}", f"--workdir={workdir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with open(workdir / "results.json") as f:
      runs.append(dict(losses=read_scalars(str(workdir), "train/loss"), results=json.load(f),
                       tokenizer=(workdir / "tokenizer" / "fingerprint.txt").read_text()))
  a, b = runs
  assert sorted(a["losses"]) == list(range(1, 9))
  assert a["losses"] == b["losses"]  # exact, not approximate
  assert a["results"] == b["results"]
  assert a["tokenizer"] == b["tokenizer"]


@pytest.mark.slow
def test_a_run_refuses_a_tokenizer_other_than_its_own(tiny_data_dir, tmp_path):
  config = tiny.get_config(f"data_dir={tiny_data_dir},steps=3,evals=none")
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  kept = os.path.join(workdir, "tokenizer")
  assert os.path.exists(os.path.join(kept, "tokenizer.json"))
  # A tokenizer of the same size with other ids: the checkpoint would load and embed the reports
  # wrongly without a word of warning.
  other = str(tmp_path / "other_tokenizer")
  vocab = tokenizer_lib.load_tokenizer(kept).get_vocab()
  reports = ["right pleural effusion and cardiomegaly"] * 3 + ["the lungs are clear"] * 5
  tokenizer_lib.train_wordpiece(reports, other, len(vocab))
  config.data.tokenizer = other
  with pytest.raises(errors.ConfigError, match=f"--config.data.tokenizer={kept}"):
    train.evaluate_checkpoint(config, workdir)
  config.data.tokenizer = kept  # the run's own tokenizer is accepted
  results = train.evaluate_checkpoint(config, workdir)
  assert results == {}  # evals=none
  assert np.isfinite(read_scalars(workdir, "train/loss")[2])
