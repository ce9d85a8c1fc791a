"""Building blocks shared by the encoders: initializers with logical axis names, LayerNorm,
dropout and stochastic depth, and the projection heads into the joint image-text space."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from clipmed import sharding

Dtype = Any

PROJECTIONS = ("linear", "mlp")

# config.model.remat_policy -> what a rematerialised block keeps for the backward pass.
REMAT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep matmul outputs
    "dots_with_no_batch_dims_saveable":  # keep weight matmuls, recompute attention
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_block(block_cls: type[nn.Module], policy: str, static_argnums: tuple[int, ...]):
  """`block_cls` rematerialised in the backward pass with a REMAT_POLICIES policy."""
  if policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; config.model.remat_policy must be one of "
                     f"{sorted(REMAT_POLICIES)}")
  return nn.remat(block_cls, static_argnums=static_argnums, policy=REMAT_POLICIES[policy])


def dense_init(names: tuple[str | None, ...], stddev: float = 0.02):
  """Normal(0, stddev) initializer carrying logical axis names (one per parameter axis)."""
  return nn.with_logical_partitioning(nn.initializers.normal(stddev), names)


def zeros_init(names: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def layer_norm(epsilon: float, dtype: Dtype, name: str) -> nn.LayerNorm:
  """LayerNorm in `dtype` (statistics in float32) with float32 NORM-labelled scale and bias."""
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                              (sharding.NORM,)),
                      bias_init=zeros_init((sharding.NORM,)))


_DRAW_LEVELS = 1 << 16  # dropout's draws are 16-bit: two per 32-bit random word


def dropout(module: nn.Module, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
  """Inverted dropout (rng stream "dropout") from half the random bits of a draw per element.

  Generating the random bits (threefry) is most of dropout's cost, so each 32-bit random word
  gives the draws of two neighbouring elements of the last axis (16 bits each). An element is
  dropped with probability t / 2^16, t = round(rate * 2^16) (0.1 -> 0.100006), and the kept ones
  are scaled by 2^16 / (2^16 - t) in float32, so the expectation is exactly the input. The masks
  depend only on the key and each element's position, not on how the array is sharded.
  """
  if deterministic or rate == 0.0:
    return x
  threshold = min(round(rate * _DRAW_LEVELS), _DRAW_LEVELS)
  if threshold == _DRAW_LEVELS:  # rate 1, or within 2^-17 of it
    return jnp.zeros_like(x)
  key = module.make_rng("dropout")
  width = x.shape[-1]
  if width % 2 == 0:
    words = jax.random.bits(key, x.shape[:-1] + (width // 2,), jnp.uint32)
    draws = jnp.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(x.shape)
  else:
    draws = jax.random.bits(key, x.shape, jnp.uint32) >> 16
  scale = _DRAW_LEVELS / (_DRAW_LEVELS - threshold)
  kept = (x.astype(jnp.float32) * scale).astype(x.dtype)
  return jnp.where(draws >= threshold, kept, jnp.zeros((), x.dtype))


def drop_path(module: nn.Module, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
  """Stochastic depth: drops a whole residual branch per example (rng stream "dropout")."""
  if deterministic or rate == 0.0:
    return x
  keep = 1.0 - rate
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep, shape)
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


class ProjectionHead(nn.Module):
  """Maps encoder features [B, F] to the joint space [B, D].

  Attributes:
    embed_dim: joint embedding width D.
    kind: "linear" (one bias-free matrix, as CLIP) or "mlp" (Dense F -> GELU -> Dense D).
    dtype: compute dtype.
  """
  embed_dim: int
  kind: str = "linear"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "linear":
      return nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                      name="proj", kernel_init=dense_init((sharding.EMBED, sharding.JOINT)))(x)
    if self.kind == "mlp":
      x = nn.Dense(x.shape[-1], dtype=self.dtype, param_dtype=jnp.float32, name="hidden",
                   kernel_init=dense_init((sharding.EMBED, sharding.MLP)),
                   bias_init=zeros_init((sharding.MLP,)))(x)
      x = nn.gelu(x, approximate=False)
      return nn.Dense(self.embed_dim, dtype=self.dtype, param_dtype=jnp.float32, name="proj",
                      kernel_init=dense_init((sharding.MLP, sharding.JOINT)),
                      bias_init=zeros_init((sharding.JOINT,)))(x)
    raise ValueError(f"unknown projection {self.kind!r}; config.model.projection must be one of "
                     f"{PROJECTIONS}")
