"""Configs build, arguments parse, ablation rows mean what the paper's table says."""

import os
import subprocess
import sys

import pytest

from clipmed import errors, train
from configs import ablations, common, demo, full, imbalance, paper_eval, synth_paper, tiny
from tests.conftest import ROOT


@pytest.mark.parametrize("module", [demo, tiny, full, ablations, imbalance, paper_eval,
                                    synth_paper])
def test_every_config_builds_and_names_its_command(module):
  config = module.get_config()
  assert module.__doc__.strip().splitlines()[0].startswith(
      ("python -m clipmed.main --config=", "python -m clipmed.evaluate --config="))
  train.validate_config(config)
  assert config.batch_size > 0 and config.num_train_steps > 0
  assert set(config.loss.weights) == {"text", "clinical", "graph"}


@pytest.mark.parametrize("module", [demo, full, paper_eval, synth_paper])
def test_every_yes_no_decision_has_its_fields_to_override(module):
  """`--config.evals.<name>.prior=none` / `.calibrate=False` (README) need the keys present."""
  decisions = [(name, cfg) for name, cfg in module.get_config().evals.items()
               if cfg.task == "adversarial" or (cfg.task == "zero_shot" and len(cfg.classes) > 1)]
  assert decisions
  for name, cfg in decisions:
    assert cfg.prior == "train" and cfg.calibrate is True, name


def test_parse_arg_types_and_errors():
  args = common.parse_arg("steps=12,flag=false,name=x", steps=1, flag=True, name="a")
  assert (args.steps, args.flag, args.name) == (12, False, "x")
  with pytest.raises(ValueError, match="unknown config argument 'stpes'"):
    common.parse_arg("stpes=3", steps=1)
  with pytest.raises(ValueError, match="not a valid int"):
    common.parse_arg("steps=abc", steps=1)
  with pytest.raises(ValueError, match="not key=value"):
    common.parse_arg("steps", steps=1)


def test_clip_row_is_infonce_and_full_row_enables_everything():
  clip = ablations.get_config("row=clip")
  assert all(t >= 1.0 for t in clip.loss.thresholds.values())
  assert dict(clip.loss.weights) == dict(text=1.0, clinical=0.0, graph=0.0)
  assert not clip.loss.hard_negatives and not clip.model.graph.enabled
  full_row = ablations.get_config("row=clip_ng_dtcg")
  assert full_row.loss.hard_negatives and full_row.model.graph.enabled
  assert all(t < 1.0 for t in full_row.loss.thresholds.values())
  assert all(w > 0 for w in full_row.loss.weights.values())
  n_dtc = ablations.get_config("row=clip_n_dtc")
  assert n_dtc.loss.hard_negatives and not n_dtc.model.graph.enabled
  assert n_dtc.loss.weights.graph == 0.0 and n_dtc.loss.thresholds.clinical < 1.0
  assert ablations.get_config("row=softclip").loss.soft_labels == "softclip"
  with pytest.raises(ValueError, match="unknown ablation row"):
    ablations.get_config("row=nope")


def test_full_config_names_the_paper_encoders():
  config = full.get_config()
  assert config.model.image.init == full.SWIN_T
  assert config.model.text.init == full.BIO_CLINICAL_BERT
  assert config.data.image_size == 224 and config.batch_size == 128


def test_a_bad_config_value_is_one_clear_message(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "clipmed.main", "--config=configs/tiny.py",
       f"--workdir={tmp_path}", "--config.batch_size=-3"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "error: config.batch_size=-3 must be positive" in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--config=configs/tiny.py:stpes=3"], "error: unknown config argument 'stpes'"),
    (["--config=configs/tiny.py:steps=many"], "error: config argument steps='many' is not a valid"),
    (["--config=configs/nope.py"], "error: cannot load --config=configs/nope.py"),
    (["--config=configs/tiny.py", "--config.batch_size=abc"], "error: flag --config.batch_size"),
    (["--config=configs/tiny.py", "--config.data.views=side"], "error: config.data.views='side'"),
])
def test_command_line_config_mistakes_are_one_line(tmp_path, args, message):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "clipmed.main", *args, f"--workdir={tmp_path}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
      next(line for line in proc.stderr.splitlines() if line.startswith(message))]


def test_every_config_value_is_checked_before_any_work():
  config = tiny.get_config()
  config.loss.weights.graph = 1.0  # the graph stream without the graph encoder
  with pytest.raises(errors.ConfigError, match="graph.enabled"):
    train.validate_config(config)
  config = tiny.get_config()
  config.optimizer.warmup_steps = config.num_train_steps
  with pytest.raises(errors.ConfigError, match="warmup_steps"):
    train.validate_config(config)
  config = tiny.get_config()
  config.data.augment.crop_scale = (0.9, 0.5)
  with pytest.raises(errors.ConfigError, match="crop_scale"):
    train.validate_config(config)
  config = tiny.get_config()
  config.evals.zero_shot.task = "zero_shoot"
  with pytest.raises(errors.ConfigError, match="zero_shoot"):
    train.validate_config(config)
  config = tiny.get_config()
  config.mesh.rules = [("batch", "model")]
  with pytest.raises(errors.ConfigError, match="'model'"):
    train.validate_config(config)
