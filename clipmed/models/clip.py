"""The CLIP dual encoder: Swin image encoder, BERT text encoder, projections, logit scale."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from clipmed.models.bert import BertEncoder, pool
from clipmed.models.layers import ProjectionHead
from clipmed.models.swin import SwinTransformer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
IMAGE_ENCODERS = ("swin",)


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
    raise ValueError("config.model.text.vocab_size is 0 (\"take it from the tokenizer\"): build the "
                     "model with create_model(config.model, vocab_size=len(tokenizer)).")
  return BertEncoder(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
      num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
      max_position_embeddings=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
      dropout=cfg.dropout, dtype=compute_dtype(model_config), remat=model_config.remat, name=name)


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
  log_logit_scale (float32 scalar).
  """
  config: ml_collections.ConfigDict

  def setup(self):
    cfg = self.config
    dtype = compute_dtype(cfg)
    self.image_encoder = make_image_encoder(cfg)
    self.text_encoder = make_text_encoder(cfg)
    self.image_projection = ProjectionHead(cfg.embed_dim, cfg.projection, dtype)
    self.text_projection = ProjectionHead(cfg.embed_dim, cfg.projection, dtype)
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

  def logit_scale(self) -> jax.Array:
    """s = min(exp(log_scale), logit_scale_max), float32 scalar."""
    return jnp.minimum(jnp.exp(self.log_logit_scale), self.config.logit_scale_max)

  def __call__(self, images: jax.Array, input_ids: jax.Array, attention_mask: jax.Array, *,
               train: bool) -> dict[str, jax.Array]:
    """Returns {"image": [B, D], "text": [B, D], "logit_scale": scalar}."""
    return {
        "image": self.encode_image(images, train=train),
        "text": self.encode_text(input_ids, attention_mask, train=train),
        "logit_scale": self.logit_scale(),
    }


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
