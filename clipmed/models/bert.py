"""BERT text encoder (Devlin et al., 2019) in Flax Linen: post-LN layers, exact GELU.

Numerically the same function as transformers' BertModel (last_hidden_state) for the same
weights; pretrained.py converts Hugging Face checkpoints by a name table.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipmed import sharding
from clipmed.models.layers import dense_init, dropout, layer_norm, remat_block, zeros_init

Dtype = Any

BERT_LN_EPS = 1e-12
POOLINGS = ("cls", "mean")


class BertSelfAttention(nn.Module):
  """Multi-head self-attention over padded sequences."""
  num_heads: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    """x: [B, L, H]; mask: bool [B, L] (True = real token). Returns [B, L, H]."""
    hidden = x.shape[-1]
    if hidden % self.num_heads:
      raise ValueError(f"BERT hidden_size {hidden} is not divisible by num_heads "
                       f"{self.num_heads}; change config.model.text.")
    head_dim = hidden // self.num_heads
    proj = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), dtype=self.dtype, param_dtype=jnp.float32, name=name,
        kernel_init=dense_init((sharding.EMBED, sharding.HEADS, sharding.KV)),
        bias_init=zeros_init((sharding.HEADS, sharding.KV)))
    q, k, v = proj("query")(x), proj("key")(x), proj("value")(x)  # [B, L, h, d]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * head_dim ** -0.5
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    probs = dropout(self, probs, self.dropout, deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    return nn.DenseGeneral(
        hidden, axis=(-2, -1), dtype=self.dtype, param_dtype=jnp.float32, name="out",
        kernel_init=dense_init((sharding.HEADS, sharding.KV, sharding.EMBED)),
        bias_init=zeros_init((sharding.EMBED,)))(out)


class BertLayer(nn.Module):
  """Attention + feed-forward, each followed by dropout, residual and LayerNorm (post-LN)."""
  num_heads: int
  intermediate_size: int
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool = True) -> jax.Array:
    """x: [B, L, H]; mask: bool [B, L]. Returns [B, L, H]."""
    hidden = x.shape[-1]
    y = BertSelfAttention(self.num_heads, self.dropout, self.dtype, name="attention")(
        x, mask, deterministic)
    y = dropout(self, y, self.dropout, deterministic)
    x = layer_norm(BERT_LN_EPS, self.dtype, "attention_norm")(x + y)
    y = nn.Dense(self.intermediate_size, dtype=self.dtype, param_dtype=jnp.float32,
                 name="intermediate", kernel_init=dense_init((sharding.EMBED, sharding.MLP)),
                 bias_init=zeros_init((sharding.MLP,)))(x)
    y = nn.gelu(y, approximate=False)
    y = nn.Dense(hidden, dtype=self.dtype, param_dtype=jnp.float32, name="output",
                 kernel_init=dense_init((sharding.MLP, sharding.EMBED)),
                 bias_init=zeros_init((sharding.EMBED,)))(y)
    y = dropout(self, y, self.dropout, deterministic)
    return layer_norm(BERT_LN_EPS, self.dtype, "output_norm")(x + y)


class BertEncoder(nn.Module):
  """BERT embeddings + encoder layers; returns the last hidden state.

  Attributes:
    vocab_size: token vocabulary size.
    hidden_size: model width H.
    num_layers: encoder layers.
    num_heads: attention heads.
    intermediate_size: feed-forward inner width.
    max_position_embeddings: longest supported sequence.
    type_vocab_size: token-type (segment) vocabulary.
    dropout: dropout rate on embeddings, attention probabilities and residual branches.
    dtype: compute dtype (parameters are always float32).
    remat: rematerialise every layer in the backward pass.
    remat_policy: what a rematerialised layer keeps (a key of layers.REMAT_POLICIES).
  """
  vocab_size: int
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  dropout: float = 0.1
  dtype: Dtype = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
               token_type_ids: jax.Array | None = None, *, train: bool = False) -> jax.Array:
    """input_ids, attention_mask (1 = token, 0 = pad): int [B, L] -> hidden states [B, L, H]."""
    length = input_ids.shape[1]
    if length > self.max_position_embeddings:
      raise ValueError(f"text length {length} exceeds max_position_embeddings "
                       f"{self.max_position_embeddings}; lower config.data.max_text_length.")
    deterministic = not train
    embed = lambda n, names, name: nn.Embed(  # noqa: E731
        n, self.hidden_size, dtype=self.dtype, param_dtype=jnp.float32, name=name,
        embedding_init=dense_init(names))
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = embed(self.vocab_size, (sharding.VOCAB, sharding.EMBED), "word_embeddings")(input_ids)
    x = x + embed(self.max_position_embeddings, (sharding.LENGTH, sharding.EMBED),
                  "position_embeddings")(jnp.arange(length)[None, :])
    x = x + embed(self.type_vocab_size, (None, sharding.EMBED),
                  "token_type_embeddings")(token_type_ids)
    x = layer_norm(BERT_LN_EPS, self.dtype, "embeddings_norm")(x)
    x = dropout(self, x, self.dropout, deterministic)

    mask = attention_mask > 0  # [B, L]
    layer_cls = remat_block(BertLayer, self.remat_policy, (3,)) if self.remat else BertLayer
    for i in range(self.num_layers):
      x = layer_cls(self.num_heads, self.intermediate_size, self.dropout, self.dtype,
                    name=f"layer{i}")(x, mask, deterministic)
    return x


def pool(hidden: jax.Array, attention_mask: jax.Array, method: str) -> jax.Array:
  """Pools token states into one vector per sequence.

  Args:
    hidden: [B, L, H] last hidden state.
    attention_mask: [B, L], 1 for real tokens, 0 for padding.
    method: "cls" (the first token) or "mean" (average over real tokens only).

  Returns:
    [B, H] in hidden's dtype.
  """
  if method == "cls":
    return hidden[:, 0]
  if method == "mean":
    weights = (attention_mask > 0).astype(jnp.float32)[..., None]  # [B, L, 1]
    total = jnp.sum(hidden.astype(jnp.float32) * weights, axis=1)
    count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    return (total / count).astype(hidden.dtype)
  raise ValueError(f"unknown text pooling {method!r}; config.model.text.pooling must be one of "
                   f"{POOLINGS}")
