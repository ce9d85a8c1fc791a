"""Grain input pipeline over ArrayRecord (TFDS) sources.

Training:  source -> seeded global shuffle, a new permutation every epoch, repeated forever ->
           per-element seeded decode/augment/normalise/tokenise -> this process's slice ->
           batch -> reader threads (+ worker processes when data.worker_count > 0).
The map runs before the slice on purpose: MapDataset is lazy, so each process still only decodes
its own rows, but an element's augmentation is seeded by its *global* stream index. The global
batch at step t is therefore the same augmented examples *in the same order* for any process
count: process p holds its rows [p b, (p + 1) b) (b = B / P), which `make_global` places on p's
devices, i.e. at the same global positions as in a one-process run. The order matters beyond
rounding: dropout and drop-path draw their masks by global row position, so rows interleaved across
processes (p, p + P, ...) would train on other masks than one process does. Batching happens in
the MapDataset, so each Grain worker process builds whole batches and the stream does not depend
on data.worker_count either (the iterator *state* does: restore with the worker_count it was
saved with).

Batches are nested dicts with the fields of a clipmed.batch.BatchSpec: the hard negatives and the
padded report graphs of the method (input_pipeline/extras.py) are added when the spec asks for
them, built on the host per example.

Evaluation: `iterate_split` walks a split (or, in a multi-process run, this process's contiguous
block of it; `process_rows`) in order without augmentation and pads the last batch to full size with
a `valid` mask, so eval steps keep one static shape and every process makes the same number of
calls. `gather_rows` puts the processes' blocks back together.

Checkpointing: the train iterator is a grain.DatasetIterator; save and restore it next to the train
state in one Orbax CheckpointManager step with `checkpoint_save_args` / `checkpoint_restore_args`.
"""

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from absl import flags
from absl import logging
import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from clipmed import batch as batch_lib
from clipmed import errors
from input_pipeline import transforms

_METADATA_CHUNK = 256


def split_name(source: Any) -> str:
  """The split a source reads (TFDS sources know it), for messages."""
  split = getattr(source, "split", None)
  return str(split) if split is not None else type(source).__name__


def without_image_decoding(source: Any) -> Any:
  """Returns a TFDS data source that yields the encoded image bytes instead of decoded arrays.

  The pipeline decodes images itself (PIL, with errors that name the study and split); reading
  metadata then costs no image decoding at all. Non-TFDS sources are returned unchanged (they may
  yield encoded bytes or uint8 arrays).
  """
  if not isinstance(source, tfds.core.data_sources.base.BaseDataSource):
    return source
  decoders = dict(source.decoders or {})
  if isinstance(decoders.get("image"), tfds.decode.SkipDecoding):
    return source
  decoders["image"] = tfds.decode.SkipDecoding()
  return dataclasses.replace(source, decoders=decoders)


def _derive_seeds(seed: int) -> tuple[int, int]:
  """Independent uint32 seeds for the shuffle and the augmentation from one pipeline seed.

  Grain's shuffle uses seed + epoch per epoch, so hashing keeps runs with seeds s and s + 1 from
  sharing permutations one epoch apart.
  """
  shuffle_seed, augment_seed = np.random.SeedSequence(int(seed)).generate_state(2)
  return int(shuffle_seed), int(augment_seed)


def _read_options(data_config: Any) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=int(data_config.read_threads),
                           prefetch_buffer_size=int(data_config.read_buffer_size))


def _text_tokenizer(tokenizer: Any, data_config: Any) -> transforms.TextTokenizer | None:
  if tokenizer is None or isinstance(tokenizer, transforms.TextTokenizer):
    return tokenizer
  return transforms.TextTokenizer(tokenizer, int(data_config.max_text_length))


def _process_index_and_count(process_index: int | None,
                             process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else int(process_index)
  count = jax.process_count() if process_count is None else int(process_count)
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"process_index={index} must be in [0, process_count={count})")
  return index, count


def _check_flags_parsed() -> None:
  """Grain worker processes read absl flags; fail early with a fix instead of in a worker."""
  if not flags.FLAGS.is_parsed():
    raise RuntimeError(
        "config.data.worker_count > 0 starts Grain worker processes, which read absl flags, but "
        "flags are not parsed. Run through clipmed/main.py (absl.app.run parses them), call "
        "absl.flags.FLAGS.mark_as_parsed() first (notebooks, scripts), or set "
        "config.data.worker_count=0.")


def _example_spec(data_config: Any, spec: batch_lib.BatchSpec, class_names: Sequence[str], *,
                  split: str, train: bool) -> transforms.ExampleSpec:
  example = transforms.ExampleSpec.from_config(data_config, spec, split=split, train=train,
                                               class_names=tuple(class_names))
  if spec.negatives and example.text_field != "report_clean":
    logging.warning(
        "Hard negatives are cleaned reports (one finding per sentence, no section headers) but "
        "the training text is config.data.text_field=%r: the model can tell them apart by their "
        "form alone. Consider config.data.text_field='report_clean'.", example.text_field)
  return example


def create_train_iterator(data_config: Any, *, source: Any, tokenizer: Any,
                          spec: batch_lib.BatchSpec, class_names: Sequence[str],
                          global_batch_size: int, seed: int, process_index: int | None = None,
                          process_count: int | None = None,
                          mixture: Sequence[tuple[Any, float]] | None = None
                          ) -> grain.DatasetIterator:
  """Creates the infinite, checkpointable training iterator of this process.

  Args:
    data_config: config.data (image_size, channels, mean, std, max_text_length, uncertain_as,
      text_field, augment, worker_count, worker_buffer_size, read_threads, read_buffer_size).
    source: random-access source of prepared examples (a TFDS ArrayRecord data source or any
      sequence of dicts with the fields of input_pipeline/datasets.py).
    tokenizer: a transformers fast tokenizer (or a transforms.TextTokenizer).
    spec: the batch to produce (clipmed/batch.py); spec.negatives needs the report-processing
      fields neg_report, neg_labels, neg_source (and neg_graph with spec.graph).
    class_names: the dataset's label classes (spec.num_classes of them).
    global_batch_size: examples per step over all processes.
    seed: pipeline seed (shuffle order and augmentation).
    process_index: this process's index; defaults to jax.process_index().
    process_count: number of processes; defaults to jax.process_count().
    mixture: instead of `source` (then None): (source, weight) pairs of several training
      sources with the same fields; each is shuffled and repeated on its own (its own
      permutation every epoch) and Grain interleaves them deterministically in proportion to the
      weights (config.data.mixture).

  Returns:
    A grain.DatasetIterator of per-process batches of `spec` with
    b = global_batch_size // process_count rows.
  """
  index, count = _process_index_and_count(process_index, process_count)
  if global_batch_size < 1 or global_batch_size % count:
    raise errors.ConfigError(f"global batch size {global_batch_size} must be a positive multiple "
                             f"of the process count {count}; change config.batch_size")
  parts = [(source, 1.0)] if mixture is None else list(mixture)
  for part, _ in parts:
    if len(part) == 0:
      raise errors.DataError(f"the training source (split {split_name(part)!r}) is empty")
  example = _example_spec(data_config, spec, class_names, split=split_name(parts[0][0]),
                          train=True)
  transform = transforms.TrainTransform(example, _text_tokenizer(tokenizer, data_config))
  shuffle_seed, augment_seed = _derive_seeds(seed)

  streams = []
  for i, (part, _) in enumerate(parts):  # a new permutation of each source every epoch
    part_seed = shuffle_seed if i == 0 else _derive_seeds(seed + i)[0]
    streams.append(grain.MapDataset.source(without_image_decoding(part))
                   .shuffle(seed=part_seed).repeat(None))
  ds = streams[0] if len(streams) == 1 else grain.MapDataset.mix(
      streams, [float(weight) for _, weight in parts])
  ds = ds.random_map(transform, seed=augment_seed)  # lazy: runs only for this process's rows
  # Batches of b consecutive elements, process p taking batches p, p + P, ...: the global batch t
  # is elements [t B, (t + 1) B) and process p holds its rows [p b, (p + 1) b) (module docstring).
  ds = ds.batch(global_batch_size // count, drop_remainder=True)[index::count]
  iter_ds = ds.to_iter_dataset(_read_options(data_config))
  if data_config.worker_count > 0:
    _check_flags_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data_config.worker_count),
        per_worker_buffer_size=int(data_config.worker_buffer_size)))
  return iter(iter_ds)


class RowSubset:
  """The rows `rows` of a random-access source, in order (a view filter without a copy)."""

  def __init__(self, source: Any, rows: np.ndarray, split: str):
    self._source, self._rows, self.split = source, np.asarray(rows, np.int64), split

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> Any:
    return self._source[int(self._rows[index])]

  def __getitems__(self, indices: Sequence[int]) -> list[Any]:
    keys = [int(self._rows[i]) for i in indices]
    if hasattr(self._source, "__getitems__"):
      return self._source.__getitems__(keys)
    return [self._source[k] for k in keys]


def process_rows(num_rows: int, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """This process's share of `num_rows` evaluation rows, in whole batches.

  Process p takes the p-th contiguous block of ceil(N / P) rows (the last blocks may be shorter or
  empty) and pads it with copies of its last row (of the split's last row when the block is empty)
  to T batches of b = batch_size / P rows, T = ceil(ceil(N / P) / b) on every process, so that
  every process makes the same number of (collective) calls. The blocks in process order are the
  rows in order: `gather_rows` of each process's per-row results, filtered by the gathered
  `valid`, gives the N rows of a one-process run. One process: rows 0..N-1, the last batch padded.

  Args:
    num_rows: N, the rows of the split (or of a list of texts).
    batch_size: rows per batch over all processes (config.eval_batch_size).
    process_index: p.
    process_count: P; must divide batch_size.

  Returns:
    (rows int64 [T * b] indices into the N rows, valid bool [T * b]: not a padding row).
  """
  index, count = _process_index_and_count(process_index, process_count)
  if batch_size < 1 or batch_size % count:
    raise errors.ConfigError(f"eval batch size {batch_size} must be a positive multiple of the "
                             f"process count {count}; change config.eval_batch_size")
  per_batch = batch_size // count
  block = -(-num_rows // count)                                      # ceil(N / P)
  start, stop = min(index * block, num_rows), min((index + 1) * block, num_rows)
  total = -(-block // per_batch) * per_batch                         # T * b
  offsets = np.arange(total)
  valid = offsets < stop - start
  last = stop - 1 if stop > start else num_rows - 1
  rows = np.where(valid, start + offsets, max(last, 0)).astype(np.int64)
  return rows, valid


def gather_rows(local: np.ndarray) -> np.ndarray:
  """[n, ...] rows of this process -> [P * n, ...] the rows of every process, process 0's first.

  `local` must have the same shape and dtype on every process. In a multi-process run this is a
  collective: every process calls it, in the same order. One process: `local` itself.
  """
  local = np.asarray(local)
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def iterate_split(data_config: Any, *, source: Any, tokenizer: Any, spec: batch_lib.BatchSpec,
                  class_names: Sequence[str], batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, Any]]:
  """Iterates a split (this process's share of it) once in source order, without augmentation.

  Every batch has exactly batch_size / process_count rows; padding rows are copies of the last
  real row, and `valid` marks the real rows. With process_count P > 1, the process reads only its
  contiguous block of the split and yields as many batches as every other process
  (`process_rows`).

  Args:
    data_config: config.data.
    source: random-access source of prepared examples.
    tokenizer: a transformers fast tokenizer (or a transforms.TextTokenizer); None with an
      image-only spec (spec.text False).
    spec: the batch to produce; evaluation needs no hard negatives or graphs, so pass a spec
      without them unless a caller wants them.
    class_names: the dataset's label classes.
    batch_size: rows per batch over all processes (config.eval_batch_size).
    process_index: this process's index; 0 (with process_count 1) reads the whole split.
    process_count: the number of processes sharing the split.

  Returns:
    An iterator of batches of `spec` plus `valid` bool [b].
  """
  if batch_size < 1:
    raise errors.ConfigError(f"eval batch size must be positive, got {batch_size}")
  if len(source) == 0:
    raise errors.DataError(f"the evaluation source (split {split_name(source)!r}) is empty")
  rows, valid = process_rows(len(source), batch_size, process_index, process_count)
  per_batch = batch_size // process_count
  example = _example_spec(data_config, spec, class_names, split=split_name(source), train=False)
  transform = transforms.EvalTransform(example, _text_tokenizer(tokenizer, data_config))
  share = RowSubset(without_image_decoding(source), rows, split_name(source))
  ds = grain.MapDataset.source(share).map(transform).batch(per_batch, drop_remainder=False)
  iter_ds = ds.to_iter_dataset(_read_options(data_config))
  return ({**batch, batch_lib.VALID: valid[t * per_batch:(t + 1) * per_batch]}
          for t, batch in enumerate(iter_ds))


def split_metadata(source: Any, *, text_field: str | None, num_classes: int) -> dict[str, Any]:
  """Reads the text fields of a split in order, without decoding images.

  Args:
    source: random-access source of prepared examples.
    text_field: the report text to return (config.data.text_field: "report" or "report_clean"),
      so evaluators embed the texts the model was trained on; None for datasets without reports
      (every report is then "").
    num_classes: K, the dataset's number of label classes.

  Returns:
    dict(reports=list[str] (the `text_field` of each row), labels=float32 [N, K] in the
    labeler convention (NaN = not mentioned), study_ids=list[str]).
  """
  raw = without_image_decoding(source)
  split = split_name(source)
  reports, labels, study_ids = [], [], []
  for start in range(0, len(raw), _METADATA_CHUNK):
    keys = list(range(start, min(start + _METADATA_CHUNK, len(raw))))
    rows = raw.__getitems__(keys) if hasattr(raw, "__getitems__") else [raw[k] for k in keys]
    for key, row in zip(keys, rows):
      try:
        reports.append(transforms.as_text(row[text_field]) if text_field else "")
        study_ids.append(transforms.as_text(row["study_id"]))
        labels.append(np.asarray(row["labels"], np.float32).reshape(-1))
      except KeyError as err:
        raise errors.DataError(
            f"row {key} of split {split!r} has no {err.args[0]!r} field; prepare the dataset "
            "with the current code (python -m input_pipeline.prepare)") from None
  bad = [i for i, row in enumerate(labels) if row.shape != (num_classes,)]
  if bad:
    raise errors.DataError(f"row {bad[0]} of split {split!r} has {labels[bad[0]].size} labels, "
                           f"expected {num_classes}")
  labels_arr = np.stack(labels) if labels else np.zeros((0, num_classes), np.float32)
  return dict(reports=reports, labels=labels_arr, study_ids=study_ids)


def make_global(batch: Mapping[str, Any], mesh: Mesh,
                data_axes: Sequence[str] = ("data",)) -> dict[str, Any]:
  """Assembles per-process batches into global arrays sharded on the leading axis.

  Args:
    batch: this process's rows, a nested dict of arrays [b, ...].
    mesh: the device mesh.
    data_axes: mesh axes the batch axis is split over.

  Returns:
    The same tree of jax.Array [b * process_count, ...] with NamedSharding(mesh, P(data_axes)).
  """
  sharding = NamedSharding(mesh, PartitionSpec(tuple(data_axes)))
  return jax.tree.map(
      lambda value: jax.make_array_from_process_local_data(sharding, np.asarray(value)), batch)


def checkpoint_save_args(iterator: grain.DatasetIterator) -> Any:
  """Orbax args that save `iterator`'s position (one JSON file per process).

  Use as one item of a composite step:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               data=checkpoint_save_args(iterator)))
  """
  return grain.checkpoint.CheckpointSave(iterator)


def checkpoint_restore_args(iterator: grain.DatasetIterator) -> Any:
  """Orbax args that restore a checkpointed position into `iterator` (in place).

  `iterator` must come from `create_train_iterator` with the same config, source, batch size, seed,
  process count and worker_count as the saved one:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=checkpoint_restore_args(iterator)))
    iterator = restored["data"]
  """
  return grain.checkpoint.CheckpointRestore(iterator)
