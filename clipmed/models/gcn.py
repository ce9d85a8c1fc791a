"""The report-graph encoder: a relational GCN over padded report graphs (jraph), mean readout.

Input: the static-shape `graph` arrays of a batch (clipmed/batch.py, padded on the host by
input_pipeline/graphs.py), [B, ...]: one real graph and one jraph padding graph per example.

Node features (the cheap default): the mean of the node text's token embeddings from the
encoder's own small table [vocab, H], plus a learned embedding of the node type (NODE_TYPES).
They are computed on the fly, so the graph stream trains end to end at the cost of one embedding
lookup per node token.

Layer l (R-GCN style, Schlichtkrull et al. 2018, with mean aggregation):
  h_i <- act( W_0 h_i + b + (1 / deg_in(i)) * sum_{edges j -r-> i} W_r h_j )
Edges are typed by relation (located_at, modify, suggestive_of) and used in both directions; the
reverse direction has its own weights, so there are 2 x 3 relation matrices W_r per layer.
deg_in counts the incoming (both-direction) edges; a node without any keeps only W_0 h_i.
Activation: GELU after every layer but the last.

Readout: the mean of the final node states over the real nodes of each example's graph 0 (padding
nodes and edges are masked; padding edges only connect padding nodes anyway); a graph without
nodes reads out a learned "empty graph" vector. Then the projection head and L2 normalisation, as
for images and text.

Message passing runs per example under jax.vmap (jraph.segment_sum with num_segments = max_nodes),
so the batch axis stays the leading axis of every array and keeps its sharding.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from clipmed import sharding
from clipmed.models.layers import ProjectionHead, dense_init, layer_norm, zeros_init
from clipmed.normalize import l2_normalize

NUM_NODE_TYPES = 4   # input_pipeline.graphs.NODE_TYPES
NUM_RELATIONS = 3    # input_pipeline.graphs.RELATIONS (each used in both directions)
Dtype = Any


def _aggregate(messages_nro: jax.Array, senders: jax.Array, receivers: jax.Array,
               relations: jax.Array, edge_mask: jax.Array) -> jax.Array:
  """Mean of incoming messages for one graph.

  Args:
    messages_nro: [N, R, O] every node's features under every relation's weights.
    senders, receivers, relations: int [E] (relations already include the reverse ones).
    edge_mask: [E] 1.0 for real edges.

  Returns:
    [N, O] aggregated messages.
  """
  num_nodes = messages_nro.shape[0]
  per_edge = messages_nro[senders, relations] * edge_mask[:, None]  # [E, O]
  total = jraph.segment_sum(per_edge, receivers, num_segments=num_nodes)
  degree = jraph.segment_sum(edge_mask, receivers, num_segments=num_nodes)
  return total / jnp.maximum(degree, 1.0)[:, None]


class RelationalGraphConv(nn.Module):
  """One relational graph convolution over a batch of padded graphs (formula in the docstring).

  Attributes:
    features: output width O.
    num_relations: edge types including reverse directions.
    dtype: compute dtype.
  """
  features: int
  num_relations: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, senders: jax.Array, receivers: jax.Array,
               relations: jax.Array, edge_mask: jax.Array) -> jax.Array:
    """h [B, N, F]; senders, receivers, relations int [B, E]; edge_mask [B, E] -> [B, N, O]."""
    self_term = nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="self",
                         kernel_init=dense_init((sharding.EMBED, sharding.MLP)),
                         bias_init=zeros_init((sharding.MLP,)))(h)
    kernel = self.param("relation_kernel", dense_init((None, sharding.EMBED, sharding.MLP)),
                        (self.num_relations, h.shape[-1], self.features), jnp.float32)
    messages = jnp.einsum("bnf,rfo->bnro", h.astype(self.dtype), kernel.astype(self.dtype))
    aggregated = jax.vmap(_aggregate)(messages, senders, receivers, relations, edge_mask)
    return self_term + aggregated.astype(self_term.dtype)


class GraphEncoder(nn.Module):
  """Report graphs -> L2-normalised embeddings [B, D] in the joint space.

  Attributes:
    vocab_size: node-token vocabulary (the report tokenizer's).
    embed_dim: joint embedding width D.
    hidden_size: node state width H.
    num_layers: graph convolutions (2 in clipmed).
    projection: ProjectionHead kind ("linear" or "mlp").
    dtype: compute dtype (parameters float32).
  """
  vocab_size: int
  embed_dim: int
  hidden_size: int = 128
  num_layers: int = 2
  projection: str = "linear"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, graph: Mapping[str, jax.Array]) -> jax.Array:
    """Encodes a batch of padded graphs.

    Args:
      graph: the batch's `graph` arrays: node_tokens, node_token_mask
        [B, N, T], node_types [B, N], senders, receivers, edge_types [B, E], n_node, n_edge [B, 2].

    Returns:
      [B, D] float32, L2-normalised.
    """
    num_nodes = graph["node_types"].shape[1]
    num_edges = graph["senders"].shape[1]
    node_mask = (jnp.arange(num_nodes)[None, :] < graph["n_node"][:, :1]).astype(jnp.float32)
    edge_mask = (jnp.arange(num_edges)[None, :] < graph["n_edge"][:, :1]).astype(jnp.float32)

    # Node features: mean token embedding of the node text + node-type embedding.
    tokens = nn.Embed(self.vocab_size, self.hidden_size, dtype=self.dtype,
                      param_dtype=jnp.float32, name="token_embeddings",
                      embedding_init=dense_init((sharding.VOCAB, sharding.EMBED)))(
                          graph["node_tokens"])  # [B, N, T, H]
    token_mask = graph["node_token_mask"].astype(jnp.float32)[..., None]  # [B, N, T, 1]
    h = jnp.sum(tokens.astype(jnp.float32) * token_mask, axis=2)
    h = h / jnp.maximum(jnp.sum(token_mask, axis=2), 1.0)  # [B, N, H]
    h = h + nn.Embed(NUM_NODE_TYPES, self.hidden_size, param_dtype=jnp.float32,
                     name="type_embeddings", embedding_init=dense_init((None, sharding.EMBED)))(
                         graph["node_types"])

    # Both edge directions; reversed edges use relation + NUM_RELATIONS.
    senders = jnp.concatenate([graph["senders"], graph["receivers"]], axis=1)    # [B, 2E]
    receivers = jnp.concatenate([graph["receivers"], graph["senders"]], axis=1)  # [B, 2E]
    relations = jnp.concatenate([graph["edge_types"], graph["edge_types"] + NUM_RELATIONS],
                                axis=1)
    both_mask = jnp.concatenate([edge_mask, edge_mask], axis=1)
    for i in range(self.num_layers):
      h = RelationalGraphConv(self.hidden_size, 2 * NUM_RELATIONS, self.dtype,
                              name=f"conv{i}")(h, senders, receivers, relations, both_mask)
      if i < self.num_layers - 1:
        h = nn.gelu(h)

    count = jnp.sum(node_mask, axis=1, keepdims=True)  # [B, 1]
    pooled = jnp.sum(h.astype(jnp.float32) * node_mask[..., None], axis=1)
    pooled = pooled / jnp.maximum(count, 1.0)  # [B, H]
    empty = self.param("empty_graph", dense_init((sharding.EMBED,)), (self.hidden_size,),
                       jnp.float32)
    pooled = jnp.where(count > 0, pooled, empty[None, :])
    # At initialisation the readout is tiny (0.02-scale tables and kernels); without this norm the
    # final L2 normalisation amplifies its gradient ~100x and the graph encoder dominates the
    # global gradient norm (and so the clipping) for the first steps.
    pooled = layer_norm(1e-6, self.dtype, "readout_norm")(pooled)
    z = ProjectionHead(self.embed_dim, self.projection, self.dtype, name="projection")(pooled)
    return l2_normalize(z)
