"""The CLIP dual encoder: Swin image encoder, BERT text encoder, projections, logit scale, and the
optional report-graph encoder (config.model.graph.enabled).

Hard-negative reports go through the same text encoder as the reports, and their graphs through
the same graph encoder, in one call each: the two [B, ...] inputs are interleaved row by row into
[2B, ...] (report i at row 2i, its negative at 2i + 1), so a batch-sharded input stays on its
devices (no resharding of a concatenation), then split again.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from clipmed.models.bert import BertEncoder, pool
from clipmed.models.gcn import GraphEncoder
from clipmed.models.layers import ProjectionHead
from clipmed.models.swin import SwinTransformer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
IMAGE_ENCODERS = ("swin",)
# The un-prefixed graph arrays GraphEncoder reads (input_pipeline/graphs.py ARRAY_KEYS).
GRAPH_KEYS = ("node_tokens", "node_token_mask", "node_types", "senders", "receivers",
              "edge_types", "n_node", "n_edge")


def compute_dtype(model_config: ml_collections.ConfigDict) -> Any:
  if model_config.dtype not in DTYPES:
    raise ValueError(f"config.model.dtype={model_config.dtype!r} is not supported; use one of "
                     f"{sorted(DTYPES)}.")
  return DTYPES[model_config.dtype]


def make_image_encoder(model_config: ml_collections.ConfigDict, name: str | None = None):
  """The image encoder module named by config.model.image (Swin only for now)."""
  cfg = model_config.image
  if cfg.name not in IMAGE_ENCODERS:
    raise ValueError(f"config.model.image.name={cfg.name!r} is not supported; use one of "
                     f"{IMAGE_ENCODERS}.")
  return SwinTransformer(
      patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depths=tuple(cfg.depths),
      num_heads=tuple(cfg.num_heads), window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio,
      drop_path_rate=cfg.drop_path_rate, dtype=compute_dtype(model_config),
      remat=model_config.remat, name=name)


def make_text_encoder(model_config: ml_collections.ConfigDict, name: str | None = None):
  """The BERT text encoder of config.model.text (vocab_size must already be set)."""
  cfg = model_config.text
  if cfg.vocab_size <= 0:
    raise ValueError("config.model.text.vocab_size is 0 (take it from the tokenizer): build the "
                     "model with create_model(config.model, vocab_size=len(tokenizer)).")
  return BertEncoder(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
      num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
      max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
      dropout=cfg.dropout, dtype=compute_dtype(model_config), remat=model_config.remat, name=name)


def graph_enabled(model_config: ml_collections.ConfigDict) -> bool:
  """config.model.graph.enabled; a config without a graph block has no graph encoder."""
  graph = model_config.get("graph", None)
  return bool(graph is not None and graph.get("enabled", False))


def make_graph_encoder(model_config: ml_collections.ConfigDict, name: str | None = None):
  """The report-graph encoder of config.model.graph (node tokens use the text vocabulary)."""
  cfg = model_config.graph
  return GraphEncoder(
      vocab_size=model_config.text.vocab_size, embed_dim=model_config.embed_dim,
      hidden_size=cfg.get("hidden_size", 128), num_layers=cfg.get("num_layers", 2),
      projection=model_config.projection, dtype=compute_dtype(model_config), name=name)


def _interleave(a: jax.Array, b: jax.Array) -> jax.Array:
  """[B, ...] and [B, ...] -> [2B, ...] with a[i] at row 2i and b[i] at row 2i + 1."""
  return jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])


def _deinterleave(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Inverse of _interleave: [2B, ...] -> ([B, ...] even rows, [B, ...] odd rows)."""
  pairs = x.reshape((x.shape[0] // 2, 2) + x.shape[1:])
  return pairs[:, 0], pairs[:, 1]


def _check_graph(graph: Mapping[str, jax.Array], what: str) -> None:
  missing = [k for k in GRAPH_KEYS if k not in graph]
  if missing:
    raise ValueError(
        f"CLIPModel: {what} lacks the graph arrays {missing} (got {sorted(graph)}). Pass the "
        f"un-prefixed arrays, e.g. gcn.strip_prefix(batch, \"{what}_\").")


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Row-wise L2 normalisation in float32: [B, D] -> [B, D]."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class CLIPModel(nn.Module):
  """Image and text encoders with projections into a shared, L2-normalised space.

  Attributes:
    config: the config.model block (see configs/common.py). text.vocab_size must be > 0; use
      create_model() to fill it in from the tokenizer.

  Parameters: image_encoder/..., text_encoder/..., image_projection/..., text_projection/...,
  log_logit_scale (float32 scalar), and graph_encoder/... when config.model.graph.enabled.
  """
  config: ml_collections.ConfigDict

  def setup(self):
    cfg = self.config
    dtype = compute_dtype(cfg)
    self.image_encoder = make_image_encoder(cfg)
    self.text_encoder = make_text_encoder(cfg)
    self.image_projection = ProjectionHead(cfg.embed_dim, cfg.projection, dtype)
    self.text_projection = ProjectionHead(cfg.embed_dim, cfg.projection, dtype)
    if graph_enabled(cfg):
      self.graph_encoder = make_graph_encoder(cfg)
    self.log_logit_scale = self.param(
        "log_logit_scale",
        nn.with_logical_partitioning(nn.initializers.constant(cfg.logit_scale_init), ()),
        (), jnp.float32)

  def encode_image(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    """images: [B, H, W, C] normalised -> [B, D] float32, unit norm."""
    features = self.image_encoder(images, train=train)  # [B, F]
    return l2_normalize(self.image_projection(features))

  def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array, *,
                  train: bool = False) -> jax.Array:
    """input_ids, attention_mask: int [B, L] -> [B, D] float32, unit norm."""
    hidden = self.text_encoder(input_ids, attention_mask, train=train)  # [B, L, H]
    features = pool(hidden, attention_mask, self.config.text.pooling)  # [B, H]
    return l2_normalize(self.text_projection(features))

  def encode_graph(self, graph: Mapping[str, jax.Array]) -> jax.Array:
    """Un-prefixed graph arrays (GRAPH_KEYS, leading axis B) -> [B, D] float32, unit norm."""
    if not graph_enabled(self.config):
      raise ValueError("CLIPModel got report graphs but config.model.graph.enabled is False; "
                       "enable the graph encoder or do not pass graph / neg_graph.")
    _check_graph(graph, "graph")
    return self.graph_encoder({k: graph[k] for k in GRAPH_KEYS})

  def logit_scale(self) -> jax.Array:
    """s = min(exp(log_scale), logit_scale_max), float32 scalar."""
    return jnp.minimum(jnp.exp(self.log_logit_scale), self.config.logit_scale_max)

  def __call__(self, images: jax.Array, input_ids: jax.Array, attention_mask: jax.Array, *,
               train: bool, neg_input_ids: jax.Array | None = None,
               neg_attention_mask: jax.Array | None = None,
               graph: Mapping[str, jax.Array] | None = None,
               neg_graph: Mapping[str, jax.Array] | None = None) -> dict[str, jax.Array]:
    """Embeds a batch of studies, and their hard negatives and report graphs when given.

    Args:
      images: [B, H, W, C] normalised.
      input_ids, attention_mask: int [B, L], the reports.
      train: dropout / drop path on (rng stream "dropout").
      neg_input_ids, neg_attention_mask: int [B, L], each study's hard-negative report.
      graph: un-prefixed graph arrays of the reports (GRAPH_KEYS, leading axis B); needs
        config.model.graph.enabled.
      neg_graph: the same for the hard negatives.

    Returns:
      {"image": [B, D], "text": [B, D], "logit_scale": scalar}, plus "neg_text", "graph",
      "neg_graph" [B, D] for the inputs given. Embeddings are float32 and L2-normalised.
    """
    out = {"image": self.encode_image(images, train=train), "logit_scale": self.logit_scale()}
    if (neg_input_ids is None) != (neg_attention_mask is None):
      raise ValueError("CLIPModel: pass neg_input_ids and neg_attention_mask together.")
    if neg_input_ids is None:
      out["text"] = self.encode_text(input_ids, attention_mask, train=train)
    else:
      if neg_input_ids.shape != input_ids.shape:
        raise ValueError(f"CLIPModel: neg_input_ids {neg_input_ids.shape} must have the shape of "
                         f"input_ids {input_ids.shape} (same batch and max_text_length).")
      both = self.encode_text(_interleave(input_ids, neg_input_ids),
                              _interleave(attention_mask, neg_attention_mask), train=train)
      out["text"], out["neg_text"] = _deinterleave(both)  # [B, D] each
    if graph_enabled(self.config) and self.is_initializing() and graph is None:
      raise ValueError("config.model.graph.enabled is True, so CLIPModel.init needs report graphs "
                       "to create the graph encoder's parameters: pass graph=... (e.g. from "
                       "input_pipeline.dummy_batch(config.data, batch_size=1, "
                       "graphs=config.model.graph)).")
    if graph is not None and neg_graph is not None:
      _check_graph(graph, "graph")
      _check_graph(neg_graph, "neg_graph")
      both = self.encode_graph({k: _interleave(graph[k], neg_graph[k]) for k in GRAPH_KEYS})
      out["graph"], out["neg_graph"] = _deinterleave(both)  # [B, D] each
    elif graph is not None:
      out["graph"] = self.encode_graph(graph)
    elif neg_graph is not None:
      _check_graph(neg_graph, "neg_graph")
      out["neg_graph"] = self.encode_graph(neg_graph)
    return out


def create_model(model_config: ml_collections.ConfigDict, *,
                 vocab_size: int | None = None) -> CLIPModel:
  """Builds a CLIPModel from config.model.

  Args:
    model_config: config.model.
    vocab_size: the tokenizer's vocabulary size; used when config.model.text.vocab_size is 0
      (ignored otherwise).

  Returns:
    A CLIPModel holding a frozen copy of the config (hashable, safe under jit/remat).
  """
  cfg = ml_collections.ConfigDict(model_config.to_dict())
  if cfg.text.vocab_size <= 0:
    if not vocab_size:
      raise ValueError("config.model.text.vocab_size is 0, so create_model needs "
                       "vocab_size=len(tokenizer).")
    cfg.text.vocab_size = int(vocab_size)
  return CLIPModel(ml_collections.FrozenConfigDict(cfg))
