"""Datasets by name: how each is prepared, and the `Dataset` handle training and evaluation use.

`DATASETS` maps config.data.name (and the --dataset of `python -m input_pipeline.prepare`) to its
entry: SynthCXR, generated on first use, or a real dataset prepared once from the user's download
by its TFDS builder (input_pipeline/builders/). Adding a dataset: one builder file in
input_pipeline/builders/ and one `_Prepared(...)` line here.

The train loop and the evaluation only see the `Dataset` returned by `open_dataset`: sources per
split (with config.data.views applied), the tokenizer and the class names.
"""

import copy
import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from clipmed import batch as batch_lib
from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import pipeline, synthcxr, tokenizer as tokenizer_lib
from input_pipeline.pipeline import RowSubset
from input_pipeline.builders import base, chexpert_plus, csv_export, cxr14, listing, mimic_cxr
from input_pipeline.builders import openi, rsna_pneumonia, siim_pneumothorax, vindr_cxr
from input_pipeline.builders import chexpert as chexpert_builder

VIEWS = ("frontal", "all")  # config.data.views


@dataclasses.dataclass
class Dataset:
  """A prepared dataset: random-access sources per split and the tokenizer to use with it."""
  name: str
  data_config: ml_collections.ConfigDict
  source: Callable[[str], Any]  # split -> random-access source
  tokenizer: Any                # None for a dataset without reports opened without one
  class_names: tuple[str, ...]  # the K label classes of `labels`
  splits: tuple[str, ...]
  has_reports: bool
  # split -> image_ids of the rows the sources yield (after the view filter), for split_info
  image_ids: Callable[[str], list[str]] | None = None
  info: dict[str, Any] = dataclasses.field(default_factory=dict)  # version, config, options
  _metadata: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)

  def split_info(self, split: str) -> dict[str, Any]:
    """What identifies the rows of a split: their number and the sha256 of their sorted
    image_ids (study ids for SynthCXR, one image per study), with the dataset version."""
    if self.image_ids is not None:
      ids, kind = self.image_ids(split), "image_id_sha256"
    else:
      ids, kind = self.split_metadata(split)["study_ids"], "study_id_sha256"
    return {"images": len(ids), kind: base.split_hash(ids), **self.info}

  def iterate_split(self, split: str, *, spec: batch_lib.BatchSpec, batch_size: int,
                    process_index: int = 0,
                    process_count: int = 1) -> Iterator[dict[str, Any]]:
    """Evaluation batches of a split (of process_index's block of it) in order, the last ones
    padded (`valid` marks real rows); see pipeline.iterate_split."""
    return pipeline.iterate_split(self.data_config, source=self.source(split),
                                  tokenizer=self.tokenizer, spec=spec,
                                  class_names=self.class_names, batch_size=batch_size,
                                  process_index=process_index, process_count=process_count)

  def split_metadata(self, split: str) -> dict[str, Any]:
    """reports, labels [N, K] (labeler convention), study_ids and extras of a split (cached).

    The labels have config.data.uncertain_as applied (chexpert.apply_uncertainty_policy), as
    the training targets do: the evaluators see -1 only under "ignore", and leave it out.
    """
    if split not in self._metadata:
      text_field = self.data_config.text_field if self.has_reports else None
      meta = dict(pipeline.split_metadata(self.source(split), text_field=text_field,
                                          num_classes=len(self.class_names)))
      meta["labels"] = chexpert.apply_uncertainty_policy(meta["labels"],
                                                         self.data_config.uncertain_as)
      meta.setdefault("extras", {})
      self._metadata[split] = meta
    return self._metadata[split]


class _SynthCxr:
  """SynthCXR: generated into config.data.data_dir on first use (process 0), then read."""

  def open(self, data_config: ml_collections.ConfigDict, tokenizer: Any = None) -> Dataset:
    synth = dict(data_config.synth)
    if jax.process_index() == 0:
      synthcxr.prepare(data_config.data_dir, **synth)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("clipmed:prepare_synth_cxr")
    source = functools.cache(
        lambda split: synthcxr.data_source(data_config.data_dir, split, **synth))
    if tokenizer is None:
      tokenizer = tokenizer_lib.load_tokenizer(
          data_config.tokenizer or synthcxr.tokenizer_dir(data_config.data_dir, **synth))
    builder = synthcxr.builder(data_config.data_dir, **synth)
    return Dataset(name="synth_cxr", data_config=data_config, source=source, tokenizer=tokenizer,
                   class_names=chexpert.CATEGORIES, splits=("train", "validation", "test"),
                   has_reports=True, info=dict(version=str(builder.version),
                                               config=builder.builder_config.name))


class _Prepared:
  """A real dataset, prepared by `python -m input_pipeline.prepare` with its builder."""

  def __init__(self, builder_cls: type[base.RealDatasetBuilder]):
    self.builder_cls = builder_cls

  def builder(self, data_dir: str, *, image_size: int = base.DEFAULT_IMAGE_SIZE,
              options: dict[str, str] | None = None, seed: int = 0, max_examples: int = 0,
              vocab_size: int = base.DEFAULT_VOCAB_SIZE, **kwargs) -> base.RealDatasetBuilder:
    config = base.make_config(self.builder_cls, image_size=image_size, options=options, seed=seed,
                              max_examples=max_examples, vocab_size=vocab_size)
    return self.builder_cls(config=config, data_dir=os.path.expanduser(data_dir), **kwargs)

  def open(self, data_config: ml_collections.ConfigDict, tokenizer: Any = None) -> Dataset:
    prepared = data_config.prepared
    builder = self.builder(data_config.data_dir, image_size=prepared.image_size,
                           options=dict(prepared.options), seed=prepared.seed,
                           max_examples=prepared.max_examples, vocab_size=prepared.vocab_size)
    if not builder.is_prepared():
      raise errors.DataError(
          f"dataset {self.builder_cls.DATASET!r} is not prepared in {data_config.data_dir} (no "
          f"{builder.data_dir}); run: {prepare_command(data_config)}")
    root = os.fspath(builder.data_dir)
    with open(os.path.join(root, base.INDEX_FILE), encoding="utf-8") as f:
      index = json.load(f)
    keep = {split: _view_rows(fields["view"], data_config.views)
            for split, fields in index.items()}

    @functools.cache
    def source(split: str):
      if split not in keep:
        raise errors.ConfigError(f"dataset {self.builder_cls.DATASET!r} has the splits "
                                 f"{sorted(keep)}, not {split!r}")
      raw = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
      return raw if len(keep[split]) == len(raw) else RowSubset(raw, keep[split], split)

    has_reports = self.builder_cls.HAS_REPORTS
    if tokenizer is None and (has_reports or data_config.tokenizer):
      tokenizer = tokenizer_lib.load_tokenizer(
          data_config.tokenizer or os.path.join(root, base.TOKENIZER_DIR))
    meta = builder.info.metadata
    return Dataset(name=self.builder_cls.DATASET, data_config=data_config, source=source,
                   tokenizer=tokenizer, class_names=tuple(meta["class_names"]),
                   splits=tuple(sorted(keep)), has_reports=has_reports,
                   image_ids=lambda split: [index[split]["image_id"][i] for i in keep[split]],
                   info=dict(version=str(builder.version), config=builder.builder_config.name,
                             views=data_config.views))


def _view_rows(views: Sequence[str], which: str) -> np.ndarray:
  """Record indices of a split kept by config.data.views ("frontal" or "all")."""
  if which == "all":
    return np.arange(len(views))
  return np.array([i for i, view in enumerate(views) if listing.is_frontal(view)], np.int64)


DATASETS: dict[str, Any] = {
    "synth_cxr": _SynthCxr(),
    "mimic_cxr": _Prepared(mimic_cxr.ClipmedMimicCxr),
    "chexpert_plus": _Prepared(chexpert_plus.ClipmedChexpertPlus),
    "openi": _Prepared(openi.ClipmedOpeni),
    "csv": _Prepared(csv_export.ClipmedCsv),
    "chexpert": _Prepared(chexpert_builder.ClipmedChexpert),
    "rsna_pneumonia": _Prepared(rsna_pneumonia.ClipmedRsnaPneumonia),
    "siim_pneumothorax": _Prepared(siim_pneumothorax.ClipmedSiimPneumothorax),
    "vindr_cxr": _Prepared(vindr_cxr.ClipmedVindrCxr),
    "cxr14": _Prepared(cxr14.ClipmedCxr14),
}


def prepare_command(data_config: ml_collections.ConfigDict) -> str:
  """The `python -m input_pipeline.prepare ...` command that prepares config.data."""
  prepared = data_config.prepared
  parts = ["python -m input_pipeline.prepare", f"--dataset={data_config.name}",
           f"--manual_dir={data_config.manual_dir or 'DOWNLOAD_DIR'}",
           f"--data_dir={data_config.data_dir}"]
  if prepared.image_size != base.DEFAULT_IMAGE_SIZE:
    parts.append(f"--image_size={prepared.image_size}")
  parts += [f"--{name}={value}" for name, value in sorted(prepared.options.items())]
  for name, default in (("seed", 0), ("max_examples", 0), ("vocab_size", base.DEFAULT_VOCAB_SIZE)):
    if prepared[name] != default:
      parts.append(f"--{name}={prepared[name]}")
  return " ".join(parts)


MIXTURE_FIELDS = ("name", "weight", "options", "normal_only")


def check_mixture(data_config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a config.data.mixture that cannot work (before any data is read)."""
  entries = list(data_config.mixture)
  for i, entry in enumerate(entries):
    where = f"config.data.mixture[{i}]"
    if sorted(entry) != sorted(MIXTURE_FIELDS):
      raise errors.ConfigError(f"{where} has the fields {sorted(entry)}; it needs exactly "
                               f"{list(MIXTURE_FIELDS)}")
    if entry["name"] not in DATASETS:
      raise errors.ConfigError(f"{where}.name={entry['name']!r} is not a known dataset; choose "
                               f"one of {sorted(DATASETS)}")
    if not float(entry["weight"]) > 0:
      raise errors.ConfigError(f"{where}.weight={entry['weight']} must be > 0")
  if entries and data_config.name not in [e["name"] for e in entries]:
    raise errors.ConfigError(f"config.data.mixture does not include config.data.name="
                             f"{data_config.name!r}, whose tokenizer and classes it uses")


def mixture_sources(data_config: ml_collections.ConfigDict,
                    primary: Dataset) -> list[tuple[Any, float]] | None:
  """(train source, weight) of each config.data.mixture entry, or None without a mixture.

  Every entry is a prepared dataset (read with config.data's settings, the entry's `options`
  and the primary dataset's tokenizer) whose train split is used whole, or with normal_only=True
  only its normal studies (No Finding; found by reading the split's labels once). All entries
  must have the primary dataset's classes and reports.
  """
  if not data_config.mixture:
    return None
  parts = []
  for i, entry in enumerate(data_config.mixture):
    entry = dict(entry)
    dataset = primary
    if entry["name"] != primary.name or dict(entry["options"]):
      entry_config = copy.deepcopy(data_config)
      entry_config.name = entry["name"]
      entry_config.prepared.options = dict(entry["options"])
      dataset = open_dataset(entry_config, tokenizer=primary.tokenizer)
    if dataset.class_names != primary.class_names or not dataset.has_reports:
      raise errors.ConfigError(f"config.data.mixture[{i}] ({entry['name']}) needs reports and the "
                               f"classes of {primary.name}")
    source = dataset.source("train")
    if entry["normal_only"]:
      labels = dataset.split_metadata("train")["labels"]
      normal = chexpert.clinical_vector(labels, class_names=dataset.class_names,
                                        normalize=False)[:, dataset.class_names.index(
                                            "No Finding")] > 0
      source = RowSubset(source, np.flatnonzero(normal), "train")
    parts.append((source, float(entry["weight"])))
  return parts


def open_dataset(data_config: ml_collections.ConfigDict, tokenizer: Any = None) -> Dataset:
  """The Dataset of config.data (generating SynthCXR on first use).

  Args:
    data_config: config.data (or a copy naming another dataset, for evaluation).
    tokenizer: use this tokenizer (e.g. the training run's, for an evaluation dataset) instead of
      config.data.tokenizer or the dataset's own.
  """
  if data_config.name not in DATASETS:
    raise errors.ConfigError(f"config.data.name={data_config.name!r} is not a known dataset; "
                             f"choose one of {sorted(DATASETS)}")
  if data_config.views not in VIEWS:
    raise errors.ConfigError(f"config.data.views={data_config.views!r}; choose one of {VIEWS}")
  return DATASETS[data_config.name].open(data_config, tokenizer)
