"""Report graphs -> fixed-size arrays on the host, for the graph encoder (clipmed/models/gcn.py).

A report graph (clipmed/report/graph.py) has nodes (text, type) with types NODE_TYPES and edges
(src, dst, relation) between node indices with relations RELATIONS. Each node's text is tokenised
here (ids only, no special tokens, at most `max_node_tokens`); the encoder embeds the tokens.

Padding happens here, never under jit: every example becomes one jraph GraphsTuple of numpy arrays
holding the real graph (graph 0) plus jraph's padding graph (graph 1) that owns the remaining
node and edge slots (`pad_graphs`), and `graph_example` flattens it into a dict of arrays with
static shapes, the `graph` fields of clipmed/batch.py (GRAPH_FIELDS); Grain stacks them into a
batch [B, ...]. jraph's padding graph
needs at least one node, so at most max_nodes - 1 real nodes fit; larger graphs are truncated
(nodes past the budget, the edges touching them, then edges past max_edges), and
`graph_example(..., return_truncated=True)` reports it so the pipeline can count it.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jraph
import numpy as np

NODE_TYPES = ("ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA")
RELATIONS = ("located_at", "modify", "suggestive_of")
NODE_TYPE_INDEX = {name: i for i, name in enumerate(NODE_TYPES)}
RELATION_INDEX = {name: i for i, name in enumerate(RELATIONS)}

Tokenize = Callable[[str], Sequence[int]]


def node_tokenizer(tokenizer: Any) -> Tokenize:
  """Node-text tokenisation with a transformers fast tokenizer: ids without [CLS]/[SEP]."""
  backend = tokenizer.backend_tokenizer
  return lambda text: backend.encode(text, add_special_tokens=False).ids


def _field(item: Any, name: str, index: int) -> Any:
  return getattr(item, name) if hasattr(item, name) else item[index]


def _nodes_and_edges(graph: Any) -> tuple[list[tuple[str, str]], list[tuple[int, int, str]]]:
  """Reads a report graph given as an object with .nodes/.edges or a mapping with those keys.

  Nodes are (text, type) tuples or objects with .text and .type; edges are (src, dst, relation)
  tuples or objects with .src, .dst and .relation.
  """
  nodes = graph["nodes"] if isinstance(graph, Mapping) else graph.nodes
  edges = graph["edges"] if isinstance(graph, Mapping) else graph.edges
  nodes = [(str(_field(n, "text", 0)), str(_field(n, "type", 1))) for n in nodes]
  edges = [(int(_field(e, "src", 0)), int(_field(e, "dst", 1)), str(_field(e, "relation", 2)))
           for e in edges]
  return nodes, edges


def to_graphs_tuple(graph: Any, tokenize: Tokenize, *, max_node_tokens: int,
                    max_nodes: int | None = None, max_edges: int | None = None,
                    where: str = "report graph") -> tuple[jraph.GraphsTuple, bool]:
  """One report graph -> an unpadded single-graph GraphsTuple of numpy arrays.

  Args:
    graph: the report graph (see `_nodes_and_edges`).
    tokenize: node text -> token ids.
    max_node_tokens: tokens kept per node.
    max_nodes, max_edges: truncate to at most this many nodes / edges (None: keep all).
    where: names the graph in error messages (e.g. "study 123, report graph").

  Returns:
    (graph, truncated). nodes = {"tokens", "token_mask": [n, T], "types": [n]},
    edges = {"types": [e]}, senders/receivers [e], n_node [1], n_edge [1], globals None.
  """
  nodes, edges = _nodes_and_edges(graph)
  num_nodes = len(nodes)
  for i, (_, node_type) in enumerate(nodes):
    if node_type not in NODE_TYPE_INDEX:
      raise ValueError(f"{where}: node {i} has type {node_type!r}; expected one of {NODE_TYPES}.")
  for i, (src, dst, relation) in enumerate(edges):
    if relation not in RELATION_INDEX:
      raise ValueError(f"{where}: edge {i} has relation {relation!r}; expected one of "
                       f"{RELATIONS}.")
    if not (0 <= src < num_nodes and 0 <= dst < num_nodes):
      raise ValueError(f"{where}: edge {i} ({src} -> {dst}) refers to a node outside 0.."
                       f"{num_nodes - 1}.")
  truncated = False
  if max_nodes is not None and num_nodes > max_nodes:
    nodes, truncated = nodes[:max_nodes], True
    kept = [e for e in edges if e[0] < max_nodes and e[1] < max_nodes]
    edges = kept
  if max_edges is not None and len(edges) > max_edges:
    edges, truncated = edges[:max_edges], True

  tokens = np.zeros((len(nodes), max_node_tokens), np.int32)
  token_mask = np.zeros((len(nodes), max_node_tokens), np.int32)
  for i, (text, _) in enumerate(nodes):
    ids = list(tokenize(text))[:max_node_tokens]
    tokens[i, :len(ids)] = ids
    token_mask[i, :len(ids)] = 1
  out = jraph.GraphsTuple(
      nodes={"tokens": tokens, "token_mask": token_mask,
             "types": np.array([NODE_TYPE_INDEX[t] for _, t in nodes], np.int32)},
      edges={"types": np.array([RELATION_INDEX[r] for _, _, r in edges], np.int32)},
      senders=np.array([s for s, _, _ in edges], np.int32).reshape(-1),
      receivers=np.array([d for _, d, _ in edges], np.int32).reshape(-1),
      n_node=np.array([len(nodes)], np.int32), n_edge=np.array([len(edges)], np.int32),
      globals=None)
  return out, truncated


def pad_graphs(graphs: Sequence[jraph.GraphsTuple], max_nodes: int,
               max_edges: int) -> jraph.GraphsTuple:
  """Batches numpy GraphsTuples and pads them to exactly max_nodes / max_edges (host only).

  The result has len(graphs) + 1 graphs: the inputs in order, then jraph's padding graph holding
  the remaining (at least one) nodes and the remaining edges, which connect padding nodes only.

  Raises:
    ValueError: if the graphs need more than max_nodes - 1 nodes or max_edges edges.
  """
  batched = jraph.batch_np(list(graphs))
  num_nodes, num_edges = int(np.sum(batched.n_node)), int(np.sum(batched.n_edge))
  if num_nodes >= max_nodes or num_edges > max_edges:
    raise ValueError(f"{len(graphs)} graph(s) with {num_nodes} nodes and {num_edges} edges do "
                     f"not fit the budget max_nodes={max_nodes} (at most {max_nodes - 1} real "
                     f"nodes) and max_edges={max_edges}; raise config.model.graph.max_nodes / "
                     "max_edges.")
  return jraph.pad_with_graphs(batched, n_node=max_nodes, n_edge=max_edges,
                               n_graph=len(graphs) + 1)


def graph_example(graph: Any, tokenize: Tokenize, *, max_nodes: int, max_edges: int,
                  max_node_tokens: int, where: str = "report graph",
                  return_truncated: bool = False):
  """One report graph -> the dict of static-shape arrays described in the module docstring.

  Args:
    graph: the report graph.
    tokenize: node text -> token ids (`node_tokenizer(tokenizer)`).
    max_nodes, max_edges, max_node_tokens: the static budget (config.model.graph).
    where: names the graph in error messages.
    return_truncated: also return whether the graph was cut to fit the budget.

  Returns:
    {name: int32 array} for every name of clipmed.batch.GRAPH_FIELDS (and the truncated flag
    when asked).
  """
  single, truncated = to_graphs_tuple(graph, tokenize, max_node_tokens=max_node_tokens,
                                      max_nodes=max_nodes - 1, max_edges=max_edges, where=where)
  padded = pad_graphs([single], max_nodes, max_edges)
  arrays = {
      "node_tokens": padded.nodes["tokens"], "node_token_mask": padded.nodes["token_mask"],
      "node_types": padded.nodes["types"], "senders": padded.senders,
      "receivers": padded.receivers, "edge_types": padded.edges["types"],
      "n_node": padded.n_node, "n_edge": padded.n_edge}
  out = {k: np.asarray(v, np.int32) for k, v in arrays.items()}
  return (out, truncated) if return_truncated else out


def stack_examples(examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Stacks per-example (nested) dicts into a batch (what Grain's batching does), for tests."""
  return {k: stack_examples([e[k] for e in examples]) if isinstance(v, Mapping)
          else np.stack([e[k] for e in examples]) for k, v in examples[0].items()}


def graph_batch(graphs: Sequence[Any], tokenize: Tokenize, *, max_nodes: int, max_edges: int,
                max_node_tokens: int) -> dict[str, np.ndarray]:
  """Report graphs -> a batch dict [B, ...] (graph_example on each, then stack)."""
  return stack_examples([
      graph_example(g, tokenize, max_nodes=max_nodes, max_edges=max_edges,
                    max_node_tokens=max_node_tokens, where=f"report graph {i}")
      for i, g in enumerate(graphs)])
