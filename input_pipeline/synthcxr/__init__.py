"""SynthCXR: the embedded procedural chest X-ray dataset (clipmed's default data).

    data_dir = prepare("data/tfds", image_size=128, num_train=6000)   # builds once, then instant
    source = data_source("data/tfds", "train", image_size=128, num_train=6000)
    tok = tokenizer.load_tokenizer(tokenizer_dir("data/tfds", image_size=128, num_train=6000))

The keyword arguments are those of config.data.synth (image_size, num_train, num_validation,
num_test, seed, vocab_size); the same values must be passed to every function to find the same
dataset. TensorFlow is needed to build, not to read.

How it is made (findings.py -> reports.py -> render.py): each example samples a `Study` (view,
findings with side/zone/severity/certainty, devices), writes the report and its CheXpert labels from
the same Study, then draws it; the builder adds the report processing of the whole split
(processing.py: report_clean, graph, one hard negative per study). Labels are the generator's
ground truth and are exactly what the text asserts; uncertain findings ("possible ...", label -1)
are drawn at the mildest severity of their kind; a negated finding is never drawn. Sides are the
patient's (image left = patient right).
Example i of a split is record i, generated from np.random.default_rng([seed, split_id, i]).
"""

import json
import os
import time

from input_pipeline import extras
from input_pipeline import tokenizer as tokenizer_lib
from input_pipeline.synthcxr.generate import generate_example
from input_pipeline.synthcxr.generate import measure_speed

from clipmed import errors, progress

__all__ = ["prepare", "builder", "data_source", "tokenizer_dir", "measure_speed",
           "generate_example"]

_TOKENIZER_META = "synthcxr_tokenizer.json"


def builder(data_dir: str, *, image_size: int = 128, num_train: int = 6000,
            num_validation: int = 500, num_test: int = 1000, seed: int = 0, **unused):
  """The `synth_cxr` TFDS builder of these settings (not necessarily prepared yet).

  Extra keyword arguments (e.g. vocab_size) are accepted and ignored, so `**config.data.synth`
  can be passed as is.
  """
  del unused
  from input_pipeline.synthcxr import synth_cxr  # imports TFDS (and registers the builder)

  config = synth_cxr.make_config(image_size, num_train, num_validation, num_test, seed)
  return synth_cxr.SynthCxr(config=config, data_dir=os.path.expanduser(data_dir))


def data_source(data_dir: str, split: str, **synth):
  """Random-access source of a prepared split ("train", "validation", "test").

  Works with `grain.MapDataset.source(...)`. Examples are dicts of numpy values: image uint8
  [S, S, 1], labels and neg_labels float32 [14], and report / findings / impression / study_id /
  view / report_clean / graph / neg_report / neg_graph / neg_entity / neg_source as bytes.

  Raises:
    FileNotFoundError: the dataset was not prepared (call `prepare` first).
  """
  b = builder(data_dir, **synth)
  if not b.is_prepared():
    raise errors.DataError(
        f"SynthCXR {b.builder_config.name} is not prepared in {b.data_dir}. Run "
        f"input_pipeline.synthcxr.prepare({data_dir!r}, ...) with the same settings first.")
  if split not in b.info.splits:
    raise errors.ConfigError(f"SynthCXR {b.builder_config.name} has splits {list(b.info.splits)}, "
                             f"not {split!r}")
  return b.as_data_source(split=split)


def tokenizer_dir(data_dir: str, **synth) -> str:
  """Directory of the WordPiece tokenizer trained on this dataset's train reports."""
  return os.path.join(os.fspath(builder(data_dir, **synth).data_dir), "tokenizer")


def _check_writable(path: str) -> None:
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise errors.NotWritableError(
        f"cannot create the dataset directory {path} ({e}). Set config.data.data_dir to a "
        "writable directory, e.g. --config=configs/demo.py:data_dir=/tmp/tfds") from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise errors.NotWritableError(
        f"the dataset directory {path} is not writable. Set config.data.data_dir to a writable "
        "directory, e.g. --config=configs/demo.py:data_dir=/tmp/tfds")


def _tokenizer_ready(out_dir: str, vocab_size: int) -> bool:
  meta = os.path.join(out_dir, _TOKENIZER_META)
  if not os.path.exists(os.path.join(out_dir, "tokenizer.json")) or not os.path.exists(meta):
    return False
  with open(meta, encoding="utf-8") as fh:
    return json.load(fh).get("vocab_size") == vocab_size


def prepare(data_dir: str, *, image_size: int = 128, num_train: int = 6000,
            num_validation: int = 500, num_test: int = 1000, seed: int = 0,
            vocab_size: int = 2000) -> str:
  """Builds SynthCXR (if missing) and its WordPiece tokenizer (if missing).

  Progress is printed (and logged) about every 10% of each split. Calling it again with the same
  settings returns immediately. Run it on one process only (process 0) in multi-host jobs.

  Args:
    data_dir: TFDS data directory (config.data.data_dir).
    image_size: image side in pixels (128 default; 224 and 512 work too).
    num_train, num_validation, num_test: split sizes.
    seed: generation seed.
    vocab_size: WordPiece vocabulary size (trained on the train split's reports and their hard
      negatives).

  Returns:
    The builder's data directory (<data_dir>/synth_cxr/<config>/<version>); the tokenizer is in
    its "tokenizer" subdirectory.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  synth = dict(image_size=image_size, num_train=num_train, num_validation=num_validation,
               num_test=num_test, seed=seed)
  b = builder(data_dir, **synth)
  name = b.builder_config.name
  if not b.is_prepared():
    _check_writable(os.path.expanduser(data_dir))
    progress.say(f"Generating SynthCXR {name} ({num_train}+{num_validation}+{num_test} "
                 f"examples, {image_size}px) into {b.data_dir}; this runs once.")
    start = time.perf_counter()
    tfds.disable_progress_bar()  # clipmed's own bars, one per split
    b.download_and_prepare()
    progress.say(f"SynthCXR {name} ready in {time.perf_counter() - start:.0f}s.")
  out_dir = os.path.join(os.fspath(b.data_dir), "tokenizer")
  if not _tokenizer_ready(out_dir, vocab_size):
    _check_writable(os.fspath(b.data_dir))
    progress.say(f"Training a WordPiece tokenizer (vocab {vocab_size}) on the {name} train "
                 "reports.")
    source = b.as_data_source(split="train",
                              decoders={"image": tfds.decode.SkipDecoding()})
    # The reports and their hard negatives: the negative statements bring a few words of their own.
    texts = (extras.as_text(source[i][key]) for i in range(len(source))
             for key in ("report", "neg_report"))
    tokenizer_lib.train_wordpiece(texts, out_dir, vocab_size)
    with open(os.path.join(out_dir, _TOKENIZER_META), "w", encoding="utf-8") as fh:
      json.dump({"vocab_size": vocab_size, "dataset": name}, fh)
  return os.fspath(b.data_dir)
