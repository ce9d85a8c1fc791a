"""Shared pytest fixtures and helpers."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One persistent XLA compilation cache for the whole session, shared by the pytest workers and
# every subprocess they start (which inherit the environment): the many runs of configs/tiny.py
# compile the same programs once instead of once per run. Results do not change (a cache hit is the
# executable XLA would build again); only compilations over a second are stored.
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
  if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller set it up
    return
  if _CACHE_ENV not in os.environ:
    config.clipmed_jax_cache = tempfile.mkdtemp(prefix="clipmed-tests-jax-cache-")
    os.environ[_CACHE_ENV] = config.clipmed_jax_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")


def pytest_unconfigure(config):
  cache = getattr(config, "clipmed_jax_cache", None)
  if cache:
    shutil.rmtree(cache, ignore_errors=True)


def pytest_collection_modifyitems(items):
  """Slow tests first: a long test started last would run alone at the end. `make test` runs
  pytest-xdist with --dist worksteal, so idle workers take queued tests from busy ones (with
  xdist's default `load`, the first chunk of the list, i.e. every slow test, goes to one worker)."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def run_with_devices(code: str, num_devices: int = 8, timeout: int = 600) -> str:
  """Runs `code` in a fresh Python process with `num_devices` forced CPU devices.

  JAX fixes the device count at start-up, so multi-device tests cannot run in the pytest process.
  Returns the subprocess's stdout; fails the test with its stderr when it exits non-zero.
  """
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    pytest.fail(f"subprocess with {num_devices} devices failed:\n{proc.stderr[-6000:]}")
  return proc.stdout


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  """SynthCXR at the sizes of configs/tiny.py, prepared once per test session."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from input_pipeline import synthcxr  # pylint: disable=g-import-not-at-top

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  synthcxr.prepare(data_dir, **tiny.get_config().data.synth)
  return data_dir


def read_scalars(workdir: str, tag: str) -> dict[int, float]:
  """{step: value} of a scalar in the TensorBoard event files of `workdir` (later files win)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top

  out = {}
  for name in sorted(os.listdir(workdir)):
    if not name.startswith("events.out.tfevents"):
      continue
    acc = event_accumulator.EventAccumulator(os.path.join(workdir, name),
                                             size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    if tag in acc.Tags()["tensors"]:
      for event in acc.Tensors(tag):
        out[event.step] = float(tensor_util.make_ndarray(event.tensor_proto))
  return out


def make_wordpiece_tokenizer(texts, vocab_size: int = 100):
  """A small BERT-style fast tokenizer trained on `texts` ([PAD]=0, [CLS]=2, [SEP]=3).

  Trained by clipmed's deterministic trainer, so the ids are the same in every test run.
  """
  from input_pipeline import tokenizer  # pylint: disable=g-import-not-at-top

  with tempfile.TemporaryDirectory() as out_dir:
    tokenizer.train_wordpiece(texts, out_dir, vocab_size)
    return tokenizer.load_tokenizer(out_dir)


def prepared_records(summary, split: str) -> dict:
  """image_id -> record (images decoded) of a split prepared by input_pipeline.prepare, read
  from the directory its summary names."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  source = tfds.builder_from_directory(summary["data_dir"]).as_data_source(split)
  return {row["image_id"].decode(): row for row in (source[i] for i in range(len(source)))}


@pytest.fixture(scope="session")
def tiny_workdir(tiny_data_dir, tmp_path_factory) -> str:
  """A workdir trained with configs/tiny.py (zero-shot and retrieval evaluations, TensorBoard
  pictures on), once per session: checkpoints, config.json, tokenizer/, results.json and event
  files."""
  from clipmed import train  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path_factory.mktemp("tiny_workdir"))
  config = tiny.get_config(f"data_dir={tiny_data_dir},evals=zero_shot+retrieval")
  config.eval_summaries.enabled = True  # tests/test_summaries.py reads them
  train.train_and_evaluate(config, workdir)
  return workdir
