"""The method's extra inputs of an example: its hard-negative report and its report graphs.

Added to an example when the batch spec asks for them (clipmed/batch.py owns the field names and
shapes):

  negative   {input_ids, attention_mask int32 [L], labels float32 [K]}: the hard-negative report,
             tokenised like the report, and its clinical vector (same U-ones rule as `labels`)
  graph      the report graph as padded arrays (input_pipeline/graphs.py), and
  negative.graph  the same for the hard negative

The dataset supplies them precomputed (clipmed.report.processing.FIELDS): graph and neg_graph are
JSON {"nodes": [[text, type]...], "edges": [[src, dst, relation]...]}; the report graph is that of
report_clean (the same findings as report, one per sentence).

Studies without a hard negative (neg_source "none"): rare in real-sized splits, see
input_pipeline/synthcxr/processing.py. Such a study gets an *easy* negative: the empty report
([CLS] [SEP]), the empty graph and an all-zero label vector. It is an extra column that no row is
similar to (the clinical stream of an all-zero vector is zero), unlike a copy of the report itself,
which would compete with the positive for the same probability mass.
"""

from collections.abc import Callable, Mapping
import json
from typing import Any

import numpy as np
import tokenizers

from clipmed import errors
from clipmed import batch as batch_lib
from clipmed.report import chexpert
from input_pipeline import graphs as graphs_lib

NO_NEGATIVE = "none"
_EMPTY_GRAPH = {"nodes": [], "edges": []}


class NodeTokenizer:
  """Node text -> token ids without special tokens, padding or truncation (picklable).

  Same ids as graphs.node_tokenizer(tokenizer); built from the tokenizer's backend JSON so Grain
  can ship it to worker processes and no call mutates a shared tokenizer.
  """

  def __init__(self, backend_json: str):
    self._json = backend_json
    self._backend = self._configure()

  @classmethod
  def from_tokenizer(cls, tokenizer: Any) -> "NodeTokenizer":
    """From a transformers fast tokenizer (its `backend_tokenizer`)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, tokenizers.Tokenizer):
      raise TypeError(f"expected a transformers fast tokenizer (with .backend_tokenizer), got "
                      f"{type(tokenizer).__name__}")
    return cls(backend.to_str())

  def _configure(self) -> tokenizers.Tokenizer:
    backend = tokenizers.Tokenizer.from_str(self._json)
    backend.no_padding()
    backend.no_truncation()
    return backend

  def __getstate__(self) -> dict[str, Any]:
    return {"_json": self._json}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self._json = state["_json"]
    self._backend = self._configure()

  def __call__(self, text: str) -> list[int]:
    return self._backend.encode(text, add_special_tokens=False).ids


def as_text(value: Any) -> str:
  """TFDS Text features arrive as bytes from ArrayRecord sources, str from Python sources."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray) and value.shape == ():
    return as_text(value.item())
  return str(value)


def _field(example: Mapping[str, Any], name: str, split: str, purpose: str) -> Any:
  try:
    return example[name]
  except KeyError:
    raise errors.DataError(
        f"an example of split {split!r} has no {name!r} field, needed for {purpose} (fields: "
        f"{sorted(example)}). Prepare the dataset with the current code (python -m "
        f"input_pipeline.prepare), which adds the report processing, or turn {purpose} off."
    ) from None


def has_negative(example: Mapping[str, Any], split: str) -> bool:
  source = as_text(_field(example, "neg_source", split, "hard negatives"))
  return source != NO_NEGATIVE


def negative_fields(example: Mapping[str, Any], tokenize: Callable[[str], tuple[Any, Any]], *,
                    class_names: tuple[str, ...], uncertain_as: str | float,
                    split: str) -> dict[str, np.ndarray]:
  """The `negative` report fields of one example: input_ids, attention_mask [L], labels [K].

  Args:
    example: a dataset row with neg_report, neg_labels and neg_source.
    tokenize: the report tokenizer, text -> (ids [L], mask [L]) (transforms.TextTokenizer).
    class_names: the dataset's K label classes.
    uncertain_as: the uncertainty policy of the clinical vector (config.data.uncertain_as).
    split: split name, for messages.
  """
  if has_negative(example, split):
    text = as_text(_field(example, "neg_report", split, "hard negatives"))
    raw = np.asarray(_field(example, "neg_labels", split, "hard negatives"), np.float32)
    labels = chexpert.clinical_vector(raw, class_names=class_names, uncertain_as=uncertain_as,
                                      normalize=False)
  else:
    text, labels = "", np.zeros((len(class_names),), np.float32)
  ids, mask = tokenize(text)
  return {batch_lib.INPUT_IDS: np.asarray(ids, np.int32),
          batch_lib.ATTENTION_MASK: np.asarray(mask, np.int32),
          batch_lib.LABELS: np.asarray(labels, np.float32)}


def _parse_graph(value: Any, *, field: str, study_id: str, split: str) -> dict[str, Any]:
  text = as_text(value)
  try:
    graph = json.loads(text) if text else _EMPTY_GRAPH
  except json.JSONDecodeError as err:
    raise errors.DataError(f"study {study_id!r} in split {split!r}: field {field!r} is not a JSON "
                           f"report graph ({err}); rebuild the dataset.") from None
  if not isinstance(graph, dict) or "nodes" not in graph or "edges" not in graph:
    raise errors.DataError(f"study {study_id!r} in split {split!r}: field {field!r} must be a JSON "
                           "object with 'nodes' and 'edges'; rebuild the dataset.")
  return graph


def graph_arrays(example: Mapping[str, Any], node_tokenize: Callable[[str], Any],
                 budget: batch_lib.GraphBudget, *, negative: bool, study_id: str,
                 split: str) -> dict[str, np.ndarray]:
  """The padded `graph` arrays of one example's report (or, with negative=True, its negative).

  Graphs larger than the budget are truncated (graphs.graph_example); the default SynthCXR build
  fits the default budget (at most 44 nodes and 24 edges per graph, against 47 and 32).
  """
  field = "neg_graph" if negative else "graph"
  if negative and not has_negative(example, split):
    graph = _EMPTY_GRAPH
  else:
    graph = _parse_graph(_field(example, field, split, "report graphs"), field=field,
                         study_id=study_id, split=split)
  what = "hard-negative graph" if negative else "report graph"
  return graphs_lib.graph_example(
      graph, node_tokenize, max_nodes=budget.max_nodes, max_edges=budget.max_edges,
      max_node_tokens=budget.max_node_tokens, where=f"study {study_id!r} in split {split!r}, "
                                                    f"{what}")
