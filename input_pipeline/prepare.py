r"""Prepare a dataset once: python -m input_pipeline.prepare --dataset=NAME --manual_dir=DIR \
    --data_dir=DIR [--image_size=512] [--max_examples=N] [--workers=K] [dataset options]

Reads the untouched download in --manual_dir and writes the dataset (ArrayRecord, TFDS) into
--data_dir, where training finds it with config.data.name=NAME and config.data.data_dir=DIR.
A finished dataset is not rebuilt; an interrupted one restarts cleanly (TFDS writes into a
temporary directory and renames it when everything, the index and tokenizer included, is done).

Progress bars go to stderr; the last line of stdout is one JSON object:
  {"dataset", "version", "config", "data_dir", "splits": {split: images}, "rejected": n,
   "rejects_csv": path, "filtered": {reason: n}}

Dataset options (only the datasets that have them accept them; see README, "Datasets"):
  --views=frontal|all  --labels=dataset|labeler  --reports=PATH  --csv=FILE  --image_column=C
  --report_column=C  --split_column=C  --label_columns=A,B  --patient_column=C  --study_column=C
  --view_column=C  --five_by_200=FILE

Distributed builds on Apache Beam: --beam_runner=DirectRunner (one machine, many processes) or
the runner of your cluster with --beam_options="--project=... --region=... ..." (README).
"""

import json
import os

from absl import app, flags

from clipmed import console

_DATASET = flags.DEFINE_string("dataset", None, "A key of input_pipeline.datasets.DATASETS.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "The untouched download (not modified).")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data directory to write.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Longest image side after preparation "
                                   "(default 512; SynthCXR 128).")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", 0, "Studies per split (0: all), for trials.")
_WORKERS = flags.DEFINE_integer("workers", max(1, (os.cpu_count() or 2) - 1),
                                "Processes for report processing and images.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of report processing and of seeded splits.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 30000, "WordPiece vocabulary of the tokenizer "
                                   "trained on the train reports.")
_MAX_REJECTS = flags.DEFINE_float("max_reject_fraction", 0.05, "Stop when more of a split's "
                                  "images than this are unreadable.")
_BEAM_RUNNER = flags.DEFINE_string("beam_runner", "", "Build the images on Apache Beam with this "
                                   "runner (DirectRunner, DataflowRunner, FlinkRunner, ...).")
_BEAM_OPTIONS = flags.DEFINE_string("beam_options", "", "Beam pipeline options, space-separated.")
_OPTIONS = {name: flags.DEFINE_string(name, None, help_text) for name, help_text in (
    ("views", "frontal|all: the images kept at preparation (MIMIC-CXR)."),
    ("labels", "dataset|labeler: the dataset's own labels or clipmed's labeler."),
    ("reports", "mimic-cxr-reports.zip or the folder holding its files/ (MIMIC-CXR)."),
    ("csv", "The CSV file in manual_dir (csv dataset, when there are several)."),
    ("image_column", "Image path column, relative to the CSV (csv dataset)."),
    ("report_column", "Report text column (csv dataset)."),
    ("split_column", "train/val(idation)/test column (csv dataset); else a seeded split."),
    ("label_columns", "Comma-separated label columns, or none (csv dataset)."),
    ("patient_column", "Patient id column, for patient-level splits (csv dataset)."),
    ("study_column", "Study id column: rows sharing it are one study (csv dataset)."),
    ("view_column", "View column (PA, AP, LATERAL, ...); else FRONTAL (csv dataset)."),
    ("five_by_200", "CSV with a Path column: the test_5x200 images (CheXpert); default: drawn "
     "with --seed."),
)}
flags.mark_flags_as_required(["dataset"])


def prepare(dataset: str, *, manual_dir: str, data_dir: str, options: dict[str, str],
            image_size: int = 512, max_examples: int = 0, workers: int = 1, seed: int = 0,
            vocab_size: int = 30000, max_reject_fraction: float = 0.05, beam_runner: str = "",
            beam_options: str = "", progress: bool = True) -> dict:
  """Prepares `dataset` (if not prepared yet) and returns the summary of the module docstring."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from clipmed import errors  # pylint: disable=g-import-not-at-top
  from input_pipeline import datasets  # pylint: disable=g-import-not-at-top

  entry = datasets.DATASETS.get(dataset)
  if entry is None:
    raise errors.ConfigError(f"--dataset={dataset!r} is not a known dataset; choose one of "
                             f"{sorted(datasets.DATASETS)}")
  if dataset == "synth_cxr":
    return _prepare_synth_cxr(data_dir, image_size=image_size, max_examples=max_examples,
                              seed=seed)
  builder = entry.builder(data_dir, image_size=image_size, options=options, seed=seed,
                          max_examples=max_examples, vocab_size=vocab_size, workers=workers,
                          max_reject_fraction=max_reject_fraction, beam=bool(beam_runner),
                          progress=progress)
  if not manual_dir:
    raise errors.ConfigError(f"--dataset={dataset} needs --manual_dir, the unpacked download")
  if not os.path.isdir(os.path.expanduser(manual_dir)):
    raise errors.DataError(f"{dataset}: --manual_dir={manual_dir} is not a directory; point it "
                           f"at the unpacked download from {entry.builder_cls.HOMEPAGE}")
  if not os.listdir(os.path.expanduser(manual_dir)):  # TFDS would stop with an AssertionError
    raise errors.DataError(f"{dataset}: --manual_dir={manual_dir} is empty; point it at the "
                           f"unpacked download from {entry.builder_cls.HOMEPAGE}")
  if not builder.is_prepared():
    _check_writable(data_dir)
    beam_kwargs = {}
    if beam_runner:
      beam = tfds.core.lazy_imports.apache_beam
      beam_kwargs = dict(beam_runner=beam_runner, beam_options=beam.options.pipeline_options
                         .PipelineOptions(beam_options.split()))
    tfds.disable_progress_bar()  # clipmed's own bars
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.expanduser(manual_dir), **beam_kwargs))
  meta = builder.info.metadata
  return {"dataset": dataset, "version": str(builder.version),
          "config": builder.builder_config.name, "data_dir": os.fspath(builder.data_dir),
          "splits": {split: info["images"] for split, info in meta["splits"].items()},
          "rejected": meta["rejected"], "rejects_csv": builder.rejects_csv,
          "filtered": dict(meta["filtered"])}


def _prepare_synth_cxr(data_dir: str, *, image_size: int, max_examples: int,
                       seed: int) -> dict:
  """SynthCXR at configs/common.py's sizes (max_examples caps the train split)."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from input_pipeline import synthcxr  # pylint: disable=g-import-not-at-top
  synth = dict(common.base_config().data.synth)
  synth.update(image_size=image_size, seed=seed)
  if max_examples:
    synth["num_train"] = max_examples
  root = synthcxr.prepare(data_dir, **synth)
  builder = synthcxr.builder(data_dir, **synth)
  return {"dataset": "synth_cxr", "version": str(builder.version),
          "config": builder.builder_config.name, "data_dir": root,
          "splits": {name: info.num_examples for name, info in builder.info.splits.items()},
          "rejected": 0, "rejects_csv": None, "filtered": {}}


def _check_writable(data_dir: str) -> None:
  from clipmed import errors  # pylint: disable=g-import-not-at-top
  try:
    os.makedirs(os.path.expanduser(data_dir), exist_ok=True)
  except OSError as e:
    raise errors.NotWritableError(f"cannot create --data_dir={data_dir} ({e.strerror}); choose a "
                                  "writable directory") from None
  if not os.access(os.path.expanduser(data_dir), os.W_OK | os.X_OK):
    raise errors.NotWritableError(f"--data_dir={data_dir} is not writable; choose a writable "
                                  "directory")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  console.setup_logging()
  options = {name: flag.value for name, flag in _OPTIONS.items() if flag.value is not None}
  with console.user_errors_exit():
    summary = prepare(_DATASET.value, manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value,
                      options=options,
                      image_size=_IMAGE_SIZE.value or (128 if _DATASET.value == "synth_cxr"
                                                       else 512),
                      max_examples=_MAX_EXAMPLES.value, workers=_WORKERS.value, seed=_SEED.value,
                      vocab_size=_VOCAB_SIZE.value, max_reject_fraction=_MAX_REJECTS.value,
                      beam_runner=_BEAM_RUNNER.value, beam_options=_BEAM_OPTIONS.value,
                      progress=True)
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
