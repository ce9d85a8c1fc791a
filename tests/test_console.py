"""What a person sees on the console: progress lines, each message once, library noise hidden."""

import collections
import io
import os
import re
import subprocess
import sys

import pytest

from clipmed import progress
from tests.conftest import ROOT

# Start-up chatter that must not reach a default-verbosity console.
_NOISE = ("oneDNN", "absl::InitializeLog", "Unable to initialize backend", "cpu_feature_guard",
          "Downloading and preparing dataset", "logging_writer", "Setting work unit notes",
          "Using custom data configuration", "Hyperparameters")


def _run_main(workdir, data_dir, extra_env=None, steps=6, evals="zero_shot"):
  env = {k: v for k, v in os.environ.items()
         if k not in ("CLIPMED_VERBOSE", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  env.update(JAX_PLATFORMS="cpu", **(extra_env or {}))
  proc = subprocess.run(
      [sys.executable, "-m", "clipmed.main",
       f"--config=configs/tiny.py:steps={steps},data_dir={data_dir},evals={evals}",
       f"--workdir={workdir}"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stdout, proc.stderr


@pytest.mark.slow
def test_default_console_of_a_tiny_run(tmp_path):
  """Stdout is a pipe: plain progress lines every log_every_steps (2 in tiny.py), data preparation
  messages once each, no TensorFlow/absl start-up lines, and a summary that says where things are."""
  stdout, stderr = _run_main(tmp_path / "run", tmp_path / "tfds")
  lines = stdout.splitlines()

  progress_lines = [l for l in lines if l.startswith("train: ")]
  assert [re.match(r"train: (\d+)/6 steps", l).group(1) for l in progress_lines] == ["2", "4", "6"]
  assert all("steps/s" in l and "loss " in l and "lr " in l for l in progress_lines)
  assert "left" in progress_lines[0] and "in all" in progress_lines[-1]

  prep = [l for l in lines if "synth_cxr" in l or "SynthCXR" in l or "WordPiece" in l]
  assert len(prep) >= 8, stdout  # the announcement, per split reports + images, ready, tokenizer
  assert sum("Generating SynthCXR" in l for l in prep) == 1
  repeated = [l for l, n in collections.Counter(lines).items() if n > 1 and l.strip()]
  assert not repeated, repeated
  for split in ("train", "validation", "test"):
    assert any(re.search(rf" {split}: images: \d+/\d+ studies \(100%\)", l) for l in prep), split

  everything = stdout + stderr
  for noise in _NOISE:
    assert noise not in everything, noise
  # Warnings still reach the console, once each and without absl's timestamp prefix.
  warnings = [l for l in stderr.splitlines() if l.strip()]
  assert all(l.startswith("warning: ") for l in warnings), warnings
  assert len(warnings) == len(set(warnings))

  summary = stdout[stdout.index("Done: trained to step 6"):]
  assert "zero_shot (synth_cxr): mean_auroc" in summary
  assert f"tensorboard --logdir {tmp_path / 'run'}" in summary
  assert os.path.join(str(tmp_path / "run"), "results.md") in summary
  assert "python -m clipmed.evaluate --config=configs/tiny.py:steps=6," in summary


@pytest.mark.slow
def test_verbose_run_shows_library_logs(tiny_data_dir, tmp_path):
  _, stderr = _run_main(tmp_path / "run", tiny_data_dir, extra_env={"CLIPMED_VERBOSE": "1"},
                        steps=4, evals="none")
  assert "logging_writer" in stderr  # clu's per-scalar lines are back
  assert re.search(r"^I\d{4} ", stderr, re.M)  # absl INFO lines with their usual prefix


class _Pipe(io.StringIO):

  def isatty(self):
    return False


def test_plain_progress_lines(monkeypatch):
  out = _Pipe()
  monkeypatch.setattr(sys, "stdout", out)
  with progress.Progress(5, "train", "steps", initial=1, every=2) as bar:
    for step in range(2, 6):
      bar.set_postfix(loss=float(step))
      bar.update()
      if step == 3:
        bar.write("step 3: checkpoint")
  lines = out.getvalue().splitlines()
  assert [l.split(",")[0] for l in lines] == ["train: 2/5 steps (40%)", "step 3: checkpoint",
                                              "train: 4/5 steps (80%)", "train: 5/5 steps (100%)"]
  assert "loss 4.0000" in lines[2] and "left" in lines[2] and "in all" in lines[3]


def test_disabled_progress_prints_nothing(monkeypatch):
  out = _Pipe()
  monkeypatch.setattr(sys, "stdout", out)
  with progress.Progress(3, "train", "steps", every=1, enabled=False) as bar:
    bar.update(3)
    bar.write("only process 0 says this")
  assert out.getvalue() == ""


def test_interval_lines_and_the_final_line(monkeypatch):
  """Without `every`, a line at most every `interval` seconds, and always one at the end."""
  out = _Pipe()
  monkeypatch.setattr(sys, "stdout", out)
  with progress.Progress(1000, "mimic_cxr train: images", "studies", interval=3600) as bar:
    for _ in range(999):
      bar.update()
  lines = out.getvalue().splitlines()
  assert len(lines) == 1 and lines[0].startswith("mimic_cxr train: images: 999/1000 studies (99%)")


def test_the_evaluate_command_drops_the_flags_of_training_processes():
  from clipmed import console  # pylint: disable=g-import-not-at-top
  argv = ["clipmed/main.py", "--config=configs/tiny.py", "--workdir=w", "--distributed",
          "--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=1",
          "--config.log_every_steps=1"]
  assert console.evaluate_args(argv) == ["--config=configs/tiny.py", "--workdir=w",
                                         "--config.log_every_steps=1"]
