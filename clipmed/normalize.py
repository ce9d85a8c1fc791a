"""Row-wise L2 normalisation: the one implementation used by the models, the losses and the
evaluators, for jax arrays (under jit too) and numpy arrays alike."""

from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

Array = TypeVar("Array", np.ndarray, jax.Array)


def l2_normalize(x: Array) -> Array:
  """Scales each row (last axis) to unit L2 norm in float32; an all-zero row stays zero.

  The zero case has finite gradients (no division by zero is ever traced), so zero clinical
  vectors (a study with no positive class) and padding rows are safe inside the loss.

  Args:
    x: [..., D], a jax array (traced or not) or a numpy array.

  Returns:
    [..., D] float32, of the same kind (jax or numpy) as `x`.
  """
  xp = jnp if isinstance(x, jax.Array) else np
  x = xp.asarray(x, dtype=xp.float32)
  sq = xp.sum(xp.square(x), axis=-1, keepdims=True)
  nonzero = sq > 0
  inv = xp.where(nonzero, 1.0 / xp.sqrt(xp.where(nonzero, sq, 1.0)), 0.0)
  return x * inv.astype(xp.float32)
