"""The batch: the one place that defines the fields a training or evaluation batch carries.

A batch is a nested dict of arrays (a pytree) whose every leaf has the batch axis B first:

  image              float32 [B, S, S, C]   normalised pixels (S = config.data.image_size)
  input_ids          int32   [B, L]         the report, tokenised (L = config.data.max_text_length)
  attention_mask     int32   [B, L]         1 for real tokens
  labels             float32 [B, K]         clinical vector of the report (not L2-normalised;
                                            K = the dataset's number of classes)
  graph              {GRAPH_FIELDS}         the report graph, padded (graph encoder on)
  negative           {input_ids, attention_mask, labels, graph}
                                            each study's hard-negative report, with the same
                                            fields and shapes as the report (hard negatives on;
                                            `graph` only with the graph encoder)
  valid              bool    [B]            evaluation batches only: False on padding rows

An image-only spec (text=False: evaluation of image embeddings) drops input_ids and
attention_mask, so datasets without reports can be iterated.

The graph arrays (input_pipeline/graphs.py pads them on the host) per example:

  node_tokens, node_token_mask  int32 [N, T]  node text token ids and their mask
  node_types                    int32 [N]     index into input_pipeline.graphs.NODE_TYPES
  senders, receivers, edge_types int32 [E]    edges; index into RELATIONS
  n_node, n_edge                int32 [2]     [real, padding] counts (sum = N, E)

with N, E, T = config.model.graph.max_nodes / max_edges / max_node_tokens.

`BatchSpec` is built once from the config (and the dataset's class count) and gives the shapes
(`shapes`), a zero batch for initialisation (`zeros`) and a check of real batches (`check`). The
input pipeline, the model, the train step and the tests all take their field names from here.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

# Top-level field names.
IMAGE = "image"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LABELS = "labels"
GRAPH = "graph"
NEGATIVE = "negative"
VALID = "valid"

GRAPH_FIELDS = ("node_tokens", "node_token_mask", "node_types", "senders", "receivers",
                "edge_types", "n_node", "n_edge")

Batch = Mapping[str, Any]  # nested dict of arrays, leading axis B


@dataclasses.dataclass(frozen=True)
class GraphBudget:
  """Static graph sizes: config.model.graph.max_nodes / max_edges / max_node_tokens."""
  max_nodes: int
  max_edges: int
  max_node_tokens: int

  def __post_init__(self):
    if self.max_nodes < 2 or self.max_edges < 1 or self.max_node_tokens < 1:
      raise ValueError(f"config.model.graph needs max_nodes >= 2, max_edges >= 1 and "
                       f"max_node_tokens >= 1, got {self}")

  def field_shapes(self) -> dict[str, tuple[int, ...]]:
    """Per-example shape of every graph array."""
    n, e, t = self.max_nodes, self.max_edges, self.max_node_tokens
    return dict(node_tokens=(n, t), node_token_mask=(n, t), node_types=(n,), senders=(e,),
                receivers=(e,), edge_types=(e,), n_node=(2,), n_edge=(2,))

  def empty(self) -> dict[str, np.ndarray]:
    """The arrays of one graph without nodes (all slots belong to jraph's padding graph)."""
    out = {name: np.zeros(shape, np.int32) for name, shape in self.field_shapes().items()}
    out["n_node"] = np.array([0, self.max_nodes], np.int32)
    out["n_edge"] = np.array([0, self.max_edges], np.int32)
    return out


@dataclasses.dataclass(frozen=True)
class BatchSpec:
  """What a batch holds for one config and dataset (see the module docstring)."""
  image_size: int
  channels: int
  max_text_length: int
  num_classes: int
  negatives: bool = False
  graph: GraphBudget | None = None
  text: bool = True  # False: images and labels only (evaluation of image embeddings)

  @classmethod
  def from_config(cls, config: Any, *, num_classes: int) -> "BatchSpec":
    """From the whole config (data, model.graph, loss.hard_negatives) and the dataset's K."""
    graph = None
    if config.model.graph.enabled:
      graph = GraphBudget(max_nodes=int(config.model.graph.max_nodes),
                          max_edges=int(config.model.graph.max_edges),
                          max_node_tokens=int(config.model.graph.max_node_tokens))
    return cls(image_size=int(config.data.image_size), channels=int(config.data.channels),
               max_text_length=int(config.data.max_text_length), num_classes=int(num_classes),
               negatives=bool(config.loss.hard_negatives), graph=graph)

  def report_shapes(self) -> dict[str, Any]:
    """Per-example (shape, dtype) of the report fields (shared by the report and its negative)."""
    length = (self.max_text_length,)
    out = {LABELS: ((self.num_classes,), np.float32)}
    if self.text:
      out.update({INPUT_IDS: (length, np.int32), ATTENTION_MASK: (length, np.int32)})
    if self.graph is not None:
      out[GRAPH] = {k: (s, np.int32) for k, s in self.graph.field_shapes().items()}
    return out

  def example_shapes(self, *, with_valid: bool = False) -> dict[str, Any]:
    """Per-example nested {field: (shape, dtype)} (no batch axis)."""
    out = {IMAGE: ((self.image_size, self.image_size, self.channels), np.float32),
           **self.report_shapes()}
    if self.negatives:
      out[NEGATIVE] = self.report_shapes()
    if with_valid:
      out[VALID] = ((), np.bool_)
    return out

  def shapes(self, batch_size: int, *, with_valid: bool = False) -> dict[str, Any]:
    """Nested {field: (shape, dtype)} of a batch of `batch_size` rows."""
    return _map_leaves(lambda sd: ((batch_size,) + tuple(sd[0]), sd[1]),
                       self.example_shapes(with_valid=with_valid))

  def zeros(self, batch_size: int) -> dict[str, Any]:
    """A training batch of zeros (all-ones attention masks, empty graphs): for model init."""
    batch = _map_leaves(lambda sd: np.zeros(sd[0], sd[1]), self.shapes(batch_size))
    reports = [batch] + ([batch[NEGATIVE]] if self.negatives else [])
    for report in reports:
      if self.text:
        report[ATTENTION_MASK][:] = 1
      if self.graph is not None:
        for name, value in self.graph.empty().items():
          report[GRAPH][name][:] = value
    return batch

  def check(self, batch: Batch, *, with_valid: bool = False) -> None:
    """Raises ValueError naming the first field whose presence, shape or dtype is wrong.

    The batch size is taken from `image`; every leaf must have it as its leading axis.
    """
    if IMAGE not in batch:
      raise ValueError(f"batch has no {IMAGE!r} field (fields: {sorted(batch)})")
    expected = self.shapes(int(np.shape(batch[IMAGE])[0]), with_valid=with_valid)
    _check_tree(batch, expected, path="batch")


def _is_leaf(node: Any) -> bool:
  return isinstance(node, tuple)


def _map_leaves(fn, tree: Mapping[str, Any]) -> dict[str, Any]:
  return {k: fn(v) if _is_leaf(v) else _map_leaves(fn, v) for k, v in tree.items()}


def _check_tree(batch: Mapping[str, Any], expected: Mapping[str, Any], *, path: str) -> None:
  if set(batch) != set(expected):
    raise ValueError(f"{path} has fields {sorted(batch)}, expected {sorted(expected)}")
  for key, want in expected.items():
    where = f"{path}[{key!r}]"
    if not _is_leaf(want):
      if not isinstance(batch[key], Mapping):
        raise ValueError(f"{where} must be a dict of arrays, got {type(batch[key]).__name__}")
      _check_tree(batch[key], want, path=where)
      continue
    shape, dtype = want
    got_shape, got_dtype = tuple(np.shape(batch[key])), np.dtype(batch[key].dtype)
    if got_shape != tuple(shape) or got_dtype != np.dtype(dtype):
      raise ValueError(f"{where} is {got_dtype.name}{list(got_shape)}, expected "
                       f"{np.dtype(dtype).name}{list(shape)}")
