"""Swin Transformer image encoder (Liu et al., 2021) in Flax Linen.

Tokens stay in a [B, H, W, C] grid throughout. Each stage runs pairs of blocks with regular and
cyclically shifted windows, then (except the last stage) merges 2x2 patches. The encoder returns
the final-LayerNorm'd tokens averaged over the grid: [B, C].

Feature maps that do not fit the window are handled like the reference implementations:
  * when min(H, W) <= window_size the window shrinks to min(H, W) and the block does not shift;
    its relative-position table is sized for the smaller window, as in the original code and timm
    (transformers' SwinModel keeps the full-size table there and fails on such inputs);
  * otherwise the (layer-normed) grid is zero-padded at the bottom/right to a multiple of the window
    before the shift, and cropped after the reverse shift (the Hugging Face SwinModel order; timm
    pads after the shift, which differs only on grids that need padding).
Parameter names follow the Hugging Face layout closely so that weights convert by a name table
(see pretrained.py).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipmed import sharding
from clipmed.models.layers import dense_init, drop_path, layer_norm, remat_block, zeros_init

Dtype = Any

SWIN_LN_EPS = 1e-5  # torch.nn.LayerNorm's default, used by every Swin reference
MASK_VALUE = -100.0  # additive score for token pairs from different shifted regions (reference)


# ----------------------------------------------------------------------------- static helpers


def effective_window(height: int, width: int, window_size: int, shift_size: int) -> tuple[int, int]:
  """(window, shift) actually used on an H x W grid: no partition when the grid fits a window."""
  if min(height, width) <= window_size:
    return min(height, width), 0
  return window_size, shift_size


def relative_position_index(window: int) -> np.ndarray:
  """Index into the (2w-1)^2 bias table for each (query, key) pair of a w x w window.

  Returns:
    int32 [w*w, w*w]; entry (i, j) = (dh + w - 1) * (2w - 1) + (dw + w - 1) with (dh, dw) the
    row/column offset of token i from token j (tokens in row-major order).
  """
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))  # [2, w, w]
  coords = coords.reshape(2, -1)  # [2, N]
  rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # [2, N, N]
  return (rel[0] * (2 * window - 1) + rel[1]).astype(np.int32)


def window_partition(x: jax.Array, window: int) -> jax.Array:
  """[B, H, W, C] -> [B * nW, window*window, C] with windows in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, window * window, c)


def window_reverse(windows: jax.Array, window: int, height: int, width: int) -> jax.Array:
  """Inverse of window_partition: [B * nW, window*window, C] -> [B, H, W, C]."""
  c = windows.shape[-1]
  x = windows.reshape(-1, height // window, width // window, window, window, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, height, width, c)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray | None:
  """Additive attention mask for shifted windows on a (padded) H x W grid, or None if shift = 0.

  After the cyclic shift by -shift, each window on the bottom/right border holds tokens from up to
  three regions per axis that were not neighbours in the image; tokens only attend within their
  region.

  Returns:
    float32 [nW, window*window, window*window]: 0 within a region, MASK_VALUE across regions.
  """
  if shift == 0:
    return None

  def regions(n: int) -> np.ndarray:
    idx = np.arange(n)
    return (idx >= n - window).astype(np.int32) + (idx >= n - shift).astype(np.int32)

  region = regions(height)[:, None] * 3 + regions(width)[None, :]  # [H, W]
  region_windows = np.asarray(window_partition(region[None, :, :, None], window))[..., 0]
  different = region_windows[:, None, :] != region_windows[:, :, None]  # [nW, N, N]
  return np.where(different, MASK_VALUE, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- modules


class WindowAttention(nn.Module):
  """Multi-head self-attention inside windows with a learned relative position bias."""
  num_heads: int
  window: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
    """x: [B*nW, N, C] with N = window^2; mask: [nW, N, N] or None. Returns [B*nW, N, C]."""
    bw, n, c = x.shape
    head_dim = c // self.num_heads
    proj = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), dtype=self.dtype, param_dtype=jnp.float32, name=name,
        kernel_init=dense_init((sharding.EMBED, sharding.HEADS, sharding.KV)),
        bias_init=zeros_init((sharding.HEADS, sharding.KV)))
    q = proj("query")(x)  # [Bw, N, h, d]
    k = proj("key")(x)
    v = proj("value")(x)

    table = self.param(
        "relative_position_bias_table",
        nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                     (sharding.RELPOS, sharding.HEADS)),
        ((2 * self.window - 1) ** 2, self.num_heads), jnp.float32)
    index = relative_position_index(self.window)  # [N, N]
    bias = jnp.transpose(table[index], (2, 0, 1))  # [h, N, N]

    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * head_dim ** -0.5
    scores = scores + bias[None]
    if mask is not None:
      nw = mask.shape[0]
      scores = scores.reshape(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]
      scores = scores.reshape(bw, self.num_heads, n, n)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)  # [Bw, N, h, d]
    return nn.DenseGeneral(
        c, axis=(-2, -1), dtype=self.dtype, param_dtype=jnp.float32, name="out",
        kernel_init=dense_init((sharding.HEADS, sharding.KV, sharding.EMBED)),
        bias_init=zeros_init((sharding.EMBED,)))(out)


class Mlp(nn.Module):
  """Two-layer feed-forward block with exact GELU."""
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    x = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, name="fc1",
                 kernel_init=dense_init((sharding.EMBED, sharding.MLP)),
                 bias_init=zeros_init((sharding.MLP,)))(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(c, dtype=self.dtype, param_dtype=jnp.float32, name="fc2",
                    kernel_init=dense_init((sharding.MLP, sharding.EMBED)),
                    bias_init=zeros_init((sharding.EMBED,)))(x)


class SwinBlock(nn.Module):
  """Pre-LN (shifted-)window attention block followed by an MLP block."""
  num_heads: int
  window_size: int
  shift_size: int
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """x: [B, H, W, C] -> [B, H, W, C]."""
    b, h, w, c = x.shape
    window, shift = effective_window(h, w, self.window_size, self.shift_size)

    y = layer_norm(SWIN_LN_EPS, self.dtype, "norm1")(x)
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
      y = jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = h + pad_h, w + pad_w
    if shift:
      y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
    windows = window_partition(y, window)  # [B*nW, N, C]
    mask = shifted_window_mask(hp, wp, window, shift)
    windows = WindowAttention(self.num_heads, window, dtype=self.dtype, name="attn")(windows, mask)
    y = window_reverse(windows, window, hp, wp)
    if shift:
      y = jnp.roll(y, (shift, shift), axis=(1, 2))
    y = y[:, :h, :w, :]
    x = x + drop_path(self, y, self.drop_path_rate, deterministic)

    y = layer_norm(SWIN_LN_EPS, self.dtype, "norm2")(x)
    y = Mlp(int(c * self.mlp_ratio), dtype=self.dtype, name="mlp")(y)
    return x + drop_path(self, y, self.drop_path_rate, deterministic)


class PatchMerging(nn.Module):
  """2x2 patch merging: [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C] (odd sizes zero-padded)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    if h % 2 or w % 2:
      x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    # Channel order (row, col) = (0,0), (1,0), (0,1), (1,1), as in the reference implementations.
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                        axis=-1)  # [B, H/2, W/2, 4C]
    x = layer_norm(SWIN_LN_EPS, self.dtype, "norm")(x)
    # The widened 4C input axis is labelled MLP so the kernel never names EMBED twice.
    return nn.Dense(2 * c, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                    name="reduction", kernel_init=dense_init((sharding.MLP, sharding.EMBED)))(x)


class SwinTransformer(nn.Module):
  """Swin Transformer backbone returning globally pooled features.

  Attributes:
    patch_size: side of the square patches embedded by the stem convolution.
    embed_dim: width of the first stage (doubles at every patch merging).
    depths: blocks per stage.
    num_heads: attention heads per stage.
    window_size: attention window side (clipped to small feature maps, see module docstring).
    mlp_ratio: MLP hidden width / block width.
    drop_path_rate: stochastic-depth rate, increasing linearly from 0 to this over all blocks.
    dtype: compute dtype (parameters are always float32).
    remat: rematerialise every block in the backward pass.
    remat_policy: what a rematerialised block keeps (a key of layers.REMAT_POLICIES).
  """
  patch_size: int = 4
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: int = 7
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  dtype: Dtype = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"

  @property
  def num_features(self) -> int:
    return self.embed_dim * 2 ** (len(self.depths) - 1)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    """images: [B, H, W, C_in] float -> pooled features [B, num_features] (compute dtype)."""
    if len(self.depths) != len(self.num_heads):
      raise ValueError(f"Swin depths {tuple(self.depths)} and num_heads {tuple(self.num_heads)} "
                       "must have the same length (one entry per stage).")
    deterministic = not train
    p = self.patch_size
    b, h, w, _ = images.shape
    if h % p or w % p:  # the reference pads the image at the bottom/right
      images = jnp.pad(images, ((0, 0), (0, (-h) % p), (0, (-w) % p), (0, 0)))
    x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                param_dtype=jnp.float32, name="patch_embed",
                kernel_init=dense_init((None, None, sharding.CHANNELS, sharding.EMBED)),
                bias_init=zeros_init((sharding.EMBED,)))(images.astype(self.dtype))
    x = layer_norm(SWIN_LN_EPS, self.dtype, "patch_norm")(x)  # [B, H/p, W/p, C]

    block_cls = remat_block(SwinBlock, self.remat_policy, (2,)) if self.remat else SwinBlock
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    block_id = 0
    for stage, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      for j in range(depth):
        x = block_cls(heads, self.window_size, 0 if j % 2 == 0 else self.window_size // 2,
                      mlp_ratio=self.mlp_ratio, drop_path_rate=rates[block_id], dtype=self.dtype,
                      name=f"stage{stage}_block{j}")(x, deterministic)
        block_id += 1
      if stage < len(self.depths) - 1:
        x = PatchMerging(dtype=self.dtype, name=f"stage{stage}_merge")(x)
    x = layer_norm(SWIN_LN_EPS, self.dtype, "norm")(x)
    return jnp.mean(x, axis=(1, 2))  # [B, C]
