"""The CLIP dual encoder: Swin image encoder, BERT text encoder, projections, logit scale, and the
optional report-graph encoder (config.model.graph.enabled).

The model reads a batch of clipmed/batch.py whole. Hard-negative reports (batch["negative"]) go
through the same text encoder as the reports, and their graphs through the same graph encoder, in
one call each: the two [B, ...] inputs are interleaved row by row into [2B, ...] (report i at row
2i, its negative at 2i + 1), so a batch-sharded input stays on its devices (no resharding of a
concatenation), then split again.

Activations carry logical axis names at the encoder boundaries (BATCH for the batch axis, see
clipmed/sharding.py), so the config's rules shard them like the parameters.
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from clipmed import batch as batch_lib
from clipmed import errors
from clipmed import sharding
from clipmed.models.bert import POOLINGS, BertEncoder, pool
from clipmed.models.gcn import GraphEncoder
from clipmed.models.layers import PROJECTIONS, REMAT_POLICIES, ProjectionHead
from clipmed.models.swin import SwinTransformer
from clipmed.normalize import l2_normalize

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
IMAGE_ENCODERS = ("swin",)


def compute_dtype(model_config: ml_collections.ConfigDict) -> Any:
  """config.model.dtype as a dtype; "auto" is bfloat16 on GPU/TPU and float32 on CPU (where
  bfloat16 matmuls are slow), with float32 parameters either way."""
  if model_config.dtype == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if model_config.dtype not in DTYPES:
    raise errors.ConfigError(f"config.model.dtype={model_config.dtype!r} is not supported; use "
                             f"\"auto\" or one of {sorted(DTYPES)}.")
  return DTYPES[model_config.dtype]


def check_model_config(model_config: ml_collections.ConfigDict, *,
                       max_text_length: int | None = None) -> None:
  """Raises ConfigError for config.model values the model cannot be built with."""
  compute_dtype(model_config)
  if model_config.image.name not in IMAGE_ENCODERS:
    raise errors.ConfigError(f"config.model.image.name={model_config.image.name!r} is not "
                             f"supported; use one of {IMAGE_ENCODERS}.")
  if model_config.remat_policy not in REMAT_POLICIES:
    raise errors.ConfigError(f"config.model.remat_policy={model_config.remat_policy!r}; use one "
                             f"of {sorted(REMAT_POLICIES)}")
  if model_config.projection not in PROJECTIONS:
    raise errors.ConfigError(f"config.model.projection={model_config.projection!r}; use one of "
                             f"{PROJECTIONS}")
  if model_config.text.pooling not in POOLINGS:
    raise errors.ConfigError(f"config.model.text.pooling={model_config.text.pooling!r}; use one "
                             f"of {POOLINGS}")
  text = model_config.text
  if text.hidden_size % text.num_heads:
    raise errors.ConfigError(f"config.model.text.hidden_size={text.hidden_size} must be divisible "
                             f"by num_heads={text.num_heads}")
  if len(model_config.image.depths) != len(model_config.image.num_heads):
    raise errors.ConfigError("config.model.image.depths and num_heads must have the same length")
  if max_text_length is not None and max_text_length > text.max_position_embeddings:
    raise errors.ConfigError(f"config.data.max_text_length={max_text_length} exceeds "
                             f"config.model.text.max_position_embeddings="
                             f"{text.max_position_embeddings}")
  if model_config.embed_dim <= 0 or model_config.logit_scale_max <= 0:
    raise errors.ConfigError("config.model.embed_dim and logit_scale_max must be positive")
  if model_config.graph.enabled:
    try:
      batch_lib.GraphBudget(max_nodes=int(model_config.graph.max_nodes),
                            max_edges=int(model_config.graph.max_edges),
                            max_node_tokens=int(model_config.graph.max_node_tokens))
    except ValueError as e:
      raise errors.ConfigError(str(e)) from None


def make_image_encoder(model_config: ml_collections.ConfigDict, name: str | None = None):
  """The image encoder module named by config.model.image (Swin only for now)."""
  cfg = model_config.image
  if cfg.name not in IMAGE_ENCODERS:
    raise errors.ConfigError(f"config.model.image.name={cfg.name!r} is not supported; use one of "
                             f"{IMAGE_ENCODERS}.")
  return SwinTransformer(
      patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depths=tuple(cfg.depths),
      num_heads=tuple(cfg.num_heads), window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio,
      drop_path_rate=cfg.drop_path_rate, dtype=compute_dtype(model_config),
      remat=model_config.remat, remat_policy=model_config.remat_policy, name=name)


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
      dropout=cfg.dropout, dtype=compute_dtype(model_config), remat=model_config.remat,
      remat_policy=model_config.remat_policy, name=name)


def make_graph_encoder(model_config: ml_collections.ConfigDict, name: str | None = None):
  """The report-graph encoder of config.model.graph (node tokens use the text vocabulary)."""
  cfg = model_config.graph
  return GraphEncoder(
      vocab_size=model_config.text.vocab_size, embed_dim=model_config.embed_dim,
      hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
      projection=model_config.projection, dtype=compute_dtype(model_config), name=name)


def _interleave(a: jax.Array, b: jax.Array) -> jax.Array:
  """[B, ...] and [B, ...] -> [2B, ...] with a[i] at row 2i and b[i] at row 2i + 1."""
  return jnp.stack([a, b], axis=1).reshape((2 * a.shape[0],) + a.shape[1:])


def _deinterleave(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Inverse of _interleave: [2B, ...] -> ([B, ...] even rows, [B, ...] odd rows)."""
  pairs = x.reshape((x.shape[0] // 2, 2) + x.shape[1:])
  return pairs[:, 0], pairs[:, 1]


def _batch_constraint(x: jax.Array) -> jax.Array:
  """Shards the leading axis of an activation like the batch (config.mesh.rules; other axes
  unconstrained). A no-op outside `nn.logical_axis_rules` and a mesh context."""
  if not nn.get_logical_axis_rules():
    return x
  spec = nn.logical_to_mesh_axes((sharding.BATCH,) + (None,) * (x.ndim - 1))
  return jax.lax.with_sharding_constraint(x, spec)


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
    if cfg.graph.enabled:
      self.graph_encoder = make_graph_encoder(cfg)
    self.log_logit_scale = self.param(
        "log_logit_scale",
        nn.with_logical_partitioning(nn.initializers.constant(cfg.logit_scale_init), ()),
        (), jnp.float32)

  def encode_image(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    """images: [B, H, W, C] normalised -> [B, D] float32, unit norm."""
    features = self.image_encoder(_batch_constraint(images), train=train)  # [B, F]
    return _batch_constraint(l2_normalize(self.image_projection(_batch_constraint(features))))

  def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array, *,
                  train: bool = False) -> jax.Array:
    """input_ids, attention_mask: int [B, L] -> [B, D] float32, unit norm."""
    hidden = self.text_encoder(_batch_constraint(input_ids), attention_mask, train=train)
    features = pool(_batch_constraint(hidden), attention_mask, self.config.text.pooling)  # [B, H]
    return _batch_constraint(l2_normalize(self.text_projection(features)))

  def encode_graph(self, graph: Mapping[str, jax.Array]) -> jax.Array:
    """The `graph` arrays of a batch (clipmed/batch.py, leading axis B) -> [B, D], unit norm."""
    if not self.config.graph.enabled:
      raise ValueError("CLIPModel got report graphs but config.model.graph.enabled is False")
    missing = [k for k in batch_lib.GRAPH_FIELDS if k not in graph]
    if missing:
      raise ValueError(f"CLIPModel: the report graph lacks the arrays {missing}")
    return _batch_constraint(self.graph_encoder({k: graph[k] for k in batch_lib.GRAPH_FIELDS}))

  def logit_scale(self) -> jax.Array:
    """s = min(exp(log_scale), logit_scale_max), float32 scalar."""
    return jnp.minimum(jnp.exp(self.log_logit_scale), self.config.logit_scale_max)

  def __call__(self, batch: batch_lib.Batch, *, train: bool) -> dict[str, Any]:
    """Embeds a batch of studies, and their hard negatives and report graphs when it has them.

    Args:
      batch: a batch of clipmed/batch.py: image, input_ids, attention_mask, and `graph` /
        `negative` when present (the graph needs config.model.graph.enabled).
      train: dropout / drop path on (rng stream "dropout").

    Returns:
      {"image": [B, D], "text": [B, D], "logit_scale": scalar}, plus "graph" [B, D] when the batch
      has graphs and "negative": {"text": [B, D], "graph": [B, D]} when it has hard negatives.
      Embeddings are float32 and L2-normalised.
    """
    out = {"image": self.encode_image(batch[batch_lib.IMAGE], train=train),
           "logit_scale": self.logit_scale()}
    negative = batch.get(batch_lib.NEGATIVE)
    ids, mask = batch[batch_lib.INPUT_IDS], batch[batch_lib.ATTENTION_MASK]
    if negative is None:
      out["text"] = self.encode_text(ids, mask, train=train)
    else:
      both = self.encode_text(_interleave(ids, negative[batch_lib.INPUT_IDS]),
                              _interleave(mask, negative[batch_lib.ATTENTION_MASK]), train=train)
      out["text"], neg_text = _deinterleave(both)  # [B, D] each
      out["negative"] = {"text": neg_text}
    graph = batch.get(batch_lib.GRAPH)
    if self.config.graph.enabled and graph is None:
      raise ValueError("config.model.graph.enabled is True but the batch has no report graphs: "
                       "build it with a BatchSpec of this config (clipmed.batch).")
    if graph is not None and negative is not None:
      both = self.encode_graph({k: _interleave(graph[k], negative[batch_lib.GRAPH][k])
                                for k in batch_lib.GRAPH_FIELDS})
      out["graph"], out["negative"]["graph"] = _deinterleave(both)  # [B, D] each
    elif graph is not None:
      out["graph"] = self.encode_graph(graph)
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
