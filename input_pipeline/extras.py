"""The method's extra inputs of an example: its hard-negative report and its report graphs.

Added to an example (Grain stacks them into a batch [b, ...]) when asked for:

  with_negatives:
    neg_input_ids       int32   [L]   the hard-negative report, tokenised like the report
    neg_attention_mask  int32   [L]
    neg_labels          float32 [14]  its clinical vector (not L2-normalised, same U-ones rule as
                                      `labels`)
  graphs (a GraphBudget):
    graph_*             the report graph as input_pipeline/graphs.py arrays (node_tokens,
                        node_token_mask [N, T], node_types [N], senders, receivers, edge_types [E],
                        n_node, n_edge [2])
    neg_graph_*         the same for the hard negative (with_negatives only)

The dataset supplies them precomputed (SynthCXR >= 1.2.0, clipmed.report.pipeline.FIELDS): graph
and neg_graph are JSON {"nodes": [[text, type]...], "edges": [[src, dst, relation]...]}; the report
graph is that of report_clean (the same findings as report, one per sentence).

Studies without a hard negative (neg_source "none"). SynthCXR gives every study one except in
tiny splits without a single-entity report to borrow (input_pipeline/synthcxr/processing.py).
Such a study gets an *easy* negative: the empty report ([CLS] [SEP]), the empty graph and an
all-zero label vector. It is an extra column that no row is similar to (the clinical stream of an
all-zero vector is zero), unlike a copy of the report itself, which would compete with the
positive for the same probability mass.
"""

from collections.abc import Callable, Mapping
import dataclasses
import json
from typing import Any

import numpy as np
import tokenizers

from clipmed.report import chexpert
from input_pipeline import graphs as graphs_lib

GRAPH_PREFIX = "graph_"
NEG_GRAPH_PREFIX = "neg_graph_"
NO_NEGATIVE = "none"
_EMPTY_GRAPH = {"nodes": [], "edges": []}


@dataclasses.dataclass(frozen=True)
class GraphBudget:
  """Static graph sizes (config.model.graph.max_nodes / max_edges / max_node_tokens)."""
  max_nodes: int
  max_edges: int
  max_node_tokens: int

  @classmethod
  def from_config(cls, graphs: Mapping[str, Any] | None) -> "GraphBudget | None":
    """From a mapping holding the three sizes (other keys, e.g. `enabled`, are ignored)."""
    if graphs is None:
      return None
    if isinstance(graphs, GraphBudget):
      return graphs
    try:
      budget = cls(max_nodes=int(graphs["max_nodes"]), max_edges=int(graphs["max_edges"]),
                   max_node_tokens=int(graphs["max_node_tokens"]))
    except KeyError as err:
      raise KeyError(f"graphs= needs max_nodes, max_edges and max_node_tokens (pass "
                     f"config.model.graph); {err.args[0]!r} is missing") from None
    if budget.max_nodes < 2 or budget.max_edges < 1 or budget.max_node_tokens < 1:
      raise ValueError(f"config.model.graph needs max_nodes >= 2, max_edges >= 1 and "
                       f"max_node_tokens >= 1, got {budget}")
    return budget


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
    raise KeyError(
        f"an example of split {split!r} has no {name!r} field, needed for {purpose} (fields: "
        f"{sorted(example)}). Build the dataset with report processing (SynthCXR >= 1.2.0: "
        f"prepare() it again with the current code) or turn {purpose} off.") from None


def has_negative(example: Mapping[str, Any], split: str) -> bool:
  source = as_text(_field(example, "neg_source", split, "hard negatives"))
  return source != NO_NEGATIVE


def negative_fields(example: Mapping[str, Any], tokenize: Callable[[str], tuple[Any, Any]], *,
                    uncertain_as: float, split: str) -> dict[str, np.ndarray]:
  """neg_input_ids, neg_attention_mask int32 [L] and neg_labels float32 [14] of one example.

  Args:
    example: a dataset row with neg_report, neg_labels and neg_source.
    tokenize: the report tokenizer, text -> (ids [L], mask [L]) (transforms.TextTokenizer).
    uncertain_as: value of uncertain mentions in the clinical vector (config.data.uncertain_as).
    split: split name, for messages.
  """
  if has_negative(example, split):
    text = as_text(_field(example, "neg_report", split, "hard negatives"))
    raw = np.asarray(_field(example, "neg_labels", split, "hard negatives"), np.float32)
    labels = chexpert.clinical_vector(raw, uncertain_as=uncertain_as, normalize=False)
  else:
    text, labels = "", np.zeros((chexpert.NUM_CATEGORIES,), np.float32)
  ids, mask = tokenize(text)
  return {"neg_input_ids": np.asarray(ids, np.int32),
          "neg_attention_mask": np.asarray(mask, np.int32),
          "neg_labels": np.asarray(labels, np.float32)}


def _parse_graph(value: Any, *, field: str, study_id: str, split: str) -> dict[str, Any]:
  text = as_text(value)
  try:
    graph = json.loads(text) if text else _EMPTY_GRAPH
  except json.JSONDecodeError as err:
    raise ValueError(f"study {study_id!r} in split {split!r}: field {field!r} is not a JSON "
                     f"report graph ({err}); rebuild the dataset.") from None
  if not isinstance(graph, dict) or "nodes" not in graph or "edges" not in graph:
    raise ValueError(f"study {study_id!r} in split {split!r}: field {field!r} must be a JSON "
                     "object with 'nodes' and 'edges'; rebuild the dataset.")
  return graph


def graph_fields(example: Mapping[str, Any], node_tokenize: Callable[[str], Any],
                 budget: GraphBudget, *, with_negatives: bool, study_id: str,
                 split: str) -> dict[str, np.ndarray]:
  """graph_* (and neg_graph_* when with_negatives) padded arrays of one example.

  Graphs larger than the budget are truncated (graphs.graph_example); the default SynthCXR build
  fits the default budget (at most 44 nodes and 24 edges per graph, against 47 and 32).
  """
  sizes = dict(max_nodes=budget.max_nodes, max_edges=budget.max_edges,
               max_node_tokens=budget.max_node_tokens)
  graph = _parse_graph(_field(example, "graph", split, "report graphs"), field="graph",
                       study_id=study_id, split=split)
  out = graphs_lib.graph_example(graph, node_tokenize, prefix=GRAPH_PREFIX,
                                 where=f"study {study_id!r} in split {split!r}, report graph",
                                 **sizes)
  if with_negatives:
    if has_negative(example, split):
      neg = _parse_graph(_field(example, "neg_graph", split, "report graphs"),
                         field="neg_graph", study_id=study_id, split=split)
    else:
      neg = _EMPTY_GRAPH
    out.update(graphs_lib.graph_example(
        neg, node_tokenize, prefix=NEG_GRAPH_PREFIX,
        where=f"study {study_id!r} in split {split!r}, hard-negative graph", **sizes))
  return out


def empty_graph_fields(budget: GraphBudget, batch_size: int, prefix: str) -> dict[str, np.ndarray]:
  """A batch of empty padded graphs [batch_size, ...] (for dummy batches)."""
  n, e, t = budget.max_nodes, budget.max_edges, budget.max_node_tokens
  arrays = {
      "node_tokens": np.zeros((batch_size, n, t), np.int32),
      "node_token_mask": np.zeros((batch_size, n, t), np.int32),
      "node_types": np.zeros((batch_size, n), np.int32),
      "senders": np.zeros((batch_size, e), np.int32),
      "receivers": np.zeros((batch_size, e), np.int32),
      "edge_types": np.zeros((batch_size, e), np.int32),
      "n_node": np.tile(np.array([[0, n]], np.int32), (batch_size, 1)),
      "n_edge": np.tile(np.array([[0, e]], np.int32), (batch_size, 1)),
  }
  return {prefix + k: v for k, v in arrays.items()}


def dummy_fields(*, batch_size: int, max_text_length: int, with_negatives: bool,
                 graphs: GraphBudget | None) -> dict[str, np.ndarray]:
  """The extra keys of a dummy batch, with the shapes and dtypes of real ones."""
  out = {}
  if with_negatives:
    out.update(neg_input_ids=np.zeros((batch_size, max_text_length), np.int32),
               neg_attention_mask=np.ones((batch_size, max_text_length), np.int32),
               neg_labels=np.zeros((batch_size, chexpert.NUM_CATEGORIES), np.float32))
  if graphs is not None:
    out.update(empty_graph_fields(graphs, batch_size, GRAPH_PREFIX))
    if with_negatives:
      out.update(empty_graph_fields(graphs, batch_size, NEG_GRAPH_PREFIX))
  return out
