"""Datasets by name: preparation, sources per split, tokenizer, evaluation iterators.

`DATASETS` maps config.data.name to the function that prepares it (an explicit dict, no registry).
The train loop and the evaluation CLI only see the `Dataset` handle returned by `prepare_dataset`.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from clipmed import batch as batch_lib
from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import pipeline, synthcxr, tokenizer as tokenizer_lib


@dataclasses.dataclass
class Dataset:
  """A prepared dataset: random-access sources per split and the tokenizer to use with it."""
  name: str
  data_config: ml_collections.ConfigDict
  source: Callable[[str], Any]  # split -> random-access source
  tokenizer: Any
  class_names: tuple[str, ...]  # the K label classes of `labels`
  _metadata: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)

  def iterate_split(self, split: str, *, spec: batch_lib.BatchSpec,
                    batch_size: int) -> Iterator[dict[str, Any]]:
    """Evaluation batches of a split in order, the last one padded (`valid` marks real rows)."""
    return pipeline.iterate_split(self.data_config, source=self.source(split),
                                  tokenizer=self.tokenizer, spec=spec,
                                  class_names=self.class_names, batch_size=batch_size)

  def split_metadata(self, split: str) -> dict[str, Any]:
    """reports, labels [N, K] (labeler convention), study_ids and extras of a split (cached)."""
    if split not in self._metadata:
      meta = dict(pipeline.split_metadata(self.source(split),
                                          text_field=self.data_config.text_field,
                                          num_classes=len(self.class_names)))
      meta.setdefault("extras", {})
      self._metadata[split] = meta
    return self._metadata[split]


def _prepare_synth_cxr(data_config: ml_collections.ConfigDict) -> tuple[Callable, str]:
  synth = dict(data_config.synth)
  if jax.process_index() == 0:
    synthcxr.prepare(data_config.data_dir, **synth)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("clipmed:prepare_synth_cxr")
  source = functools.cache(lambda split: synthcxr.data_source(data_config.data_dir, split, **synth))
  return source, synthcxr.tokenizer_dir(data_config.data_dir, **synth)


# name -> data_config -> (split -> source, default tokenizer path)
DATASETS: dict[str, Callable[[ml_collections.ConfigDict], tuple[Callable, str]]] = {
    "synth_cxr": _prepare_synth_cxr,
}


def prepare_dataset(data_config: ml_collections.ConfigDict) -> Dataset:
  """Prepares config.data.name (generating SynthCXR on first use) and loads its tokenizer."""
  if data_config.name not in DATASETS:
    raise errors.ConfigError(f"config.data.name={data_config.name!r} is not a known dataset; "
                     f"choose one of {sorted(DATASETS)}")
  source, default_tokenizer = DATASETS[data_config.name](data_config)
  tokenizer = tokenizer_lib.load_tokenizer(data_config.tokenizer or default_tokenizer)
  return Dataset(name=data_config.name, data_config=data_config, source=source,
                 tokenizer=tokenizer, class_names=chexpert.CATEGORIES)
