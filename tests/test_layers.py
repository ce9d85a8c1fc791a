"""clipmed.models.layers: the building blocks shared by the encoders (dropout)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipmed.models import layers


class _Dropout(nn.Module):
  rate: float

  @nn.compact
  def __call__(self, x, deterministic=False):
    return layers.dropout(self, x, self.rate, deterministic)


@pytest.mark.parametrize("shape", [(64, 4096), (256, 1023)])  # even and odd last axis
def test_dropout_rate_and_scale(shape):
  x = jnp.full(shape, 2.0)
  out = np.asarray(_Dropout(0.1).apply({}, x, rngs={"dropout": jax.random.key(0)}))
  threshold = round(0.1 * 65536)
  scale = 65536 / (65536 - threshold)
  kept = out != 0
  np.testing.assert_allclose(out[kept], np.float32(2.0 * scale))  # kept ones scaled exactly
  n, p = out.size, threshold / 65536
  assert abs((~kept).sum() - n * p) < 5 * math.sqrt(n * p * (1 - p))  # drop rate 0.100006
  assert abs(out.mean() - 2.0) < 5 * 2.0 * scale * math.sqrt(p * (1 - p) / n)  # unbiased
  # Neighbours along the last axis share a random word, yet draw independently.
  pairs = kept[:, : shape[1] // 2 * 2].reshape(shape[0], -1, 2)
  both_dropped = np.mean(~pairs[..., 0] & ~pairs[..., 1])
  assert abs(both_dropped - p * p) < 5 * math.sqrt(p * p / pairs[..., 0].size)


def test_dropout_identity_cases():
  x = jnp.arange(12.0).reshape(3, 4)
  rngs = {"dropout": jax.random.key(1)}
  np.testing.assert_array_equal(_Dropout(0.3).apply({}, x, True, rngs=rngs), x)
  np.testing.assert_array_equal(_Dropout(0.0).apply({}, x, rngs=rngs), x)
  np.testing.assert_array_equal(_Dropout(1.0).apply({}, x, rngs=rngs), np.zeros((3, 4)))
  bf16 = _Dropout(0.5).apply({}, x.astype(jnp.bfloat16), rngs=rngs)
  assert bf16.dtype == jnp.bfloat16


def test_dropout_masks_do_not_depend_on_sharding():
  from conftest import run_with_devices  # pylint: disable=g-import-not-at-top
  out = run_with_devices("""
      import jax, jax.numpy as jnp, numpy as np
      from jax.sharding import NamedSharding, PartitionSpec as P
      from clipmed.models import layers
      import flax.linen as nn
      class D(nn.Module):
        @nn.compact
        def __call__(self, x):
          return layers.dropout(self, x, 0.25, False)
      x = jnp.arange(4 * 6 * 8, dtype=jnp.float32).reshape(4, 6, 8) + 1
      f = jax.jit(lambda x: D().apply({}, x, rngs={"dropout": jax.random.key(7)}))
      ref = np.asarray(f(x))
      mesh = jax.make_mesh((2,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
      for spec in (P("d"), P(None, None, "d")):
        y = jax.device_put(x, NamedSharding(mesh, spec))
        np.testing.assert_array_equal(np.asarray(f(y)), ref)
      print("zeros", int((ref == 0).sum()))
      """, num_devices=2)
  assert 0 < int(out.split()[-1]) < 4 * 6 * 8
