"""The train state, the optimiser, and sharded creation from an abstract (eval_shape) state."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct
from jax.sharding import Mesh

from clipmed import errors

PyTree = Any


class TrainState(struct.PyTreeNode):
  """Everything a checkpoint must hold for an exact resume, besides the data iterator."""
  step: jax.Array
  params: PyTree
  opt_state: PyTree
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def apply_gradients(self, grads: PyTree) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


def check_optimizer_config(opt_config: ml_collections.ConfigDict, num_train_steps: int) -> None:
  """Raises ConfigError for config.optimizer values that cannot work."""
  warmup = int(opt_config.warmup_steps)
  if not 0 <= warmup < num_train_steps:
    raise errors.ConfigError(f"config.optimizer.warmup_steps={warmup} must be in [0, "
                             f"config.num_train_steps={num_train_steps})")
  if float(opt_config.learning_rate) <= 0 or float(opt_config.end_learning_rate_factor) < 0:
    raise errors.ConfigError("config.optimizer.learning_rate must be > 0 and "
                             "end_learning_rate_factor >= 0")
  if not (0 <= float(opt_config.b1) < 1 and 0 <= float(opt_config.b2) < 1):
    raise errors.ConfigError(f"config.optimizer.b1={opt_config.b1} and b2={opt_config.b2} must be "
                             "in [0, 1)")
  if float(opt_config.weight_decay) < 0 or float(opt_config.grad_clip_norm) < 0:
    raise errors.ConfigError("config.optimizer.weight_decay and grad_clip_norm must be >= 0")


def learning_rate_schedule(opt_config: ml_collections.ConfigDict,
                           num_train_steps: int) -> optax.Schedule:
  """Linear warm-up to the peak rate, then cosine decay to `end_learning_rate_factor` of it."""
  check_optimizer_config(opt_config, num_train_steps)
  warmup = int(opt_config.warmup_steps)
  peak = float(opt_config.learning_rate)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=num_train_steps,
      end_value=peak * float(opt_config.end_learning_rate_factor))


def _decay_mask(params: PyTree) -> PyTree:
  """Weight decay on matrices and kernels only: no decay on biases, norms or the logit scale."""
  return jax.tree_util.tree_map(lambda p: jnp.ndim(p) > 1, params)


def create_optimizer(opt_config: ml_collections.ConfigDict,
                     schedule: optax.Schedule) -> optax.GradientTransformation:
  """AdamW with global-norm clipping."""
  chain = []
  if opt_config.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(float(opt_config.grad_clip_norm)))
  chain.append(optax.adamw(schedule, b1=float(opt_config.b1), b2=float(opt_config.b2),
                           weight_decay=float(opt_config.weight_decay), mask=_decay_mask))
  return optax.chain(*chain)


def abstract_sharded_state(
    init_params: Callable[[jax.Array], PyTree],
    tx: optax.GradientTransformation,
    rng: jax.Array,
    mesh: Mesh,
    rules: tuple[tuple[str, str | None], ...],
) -> tuple[TrainState, TrainState]:
  """The train state as shapes only: nothing is initialised, nothing is allocated.

  The shapes come from `jax.eval_shape` of the initialiser, whose parameters carry logical axis
  metadata (nn.LogicallyPartitioned); `rules` map those names to mesh axes.

  Returns:
    (abstract_state, state_shardings): a TrainState of jax.ShapeDtypeStruct leaves that carry their
    NamedSharding (what `jax.jit(...).lower` takes), and the TrainState-shaped tree of shardings.
  """
  abstract = jax.eval_shape(_init_boxed(init_params, tx), rng)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
  shapes = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s, weak_type=x.weak_type),
      nn.unbox(abstract), shardings)
  return shapes, shardings


def _init_boxed(init_params, tx):
  def init_boxed(key):
    params = init_params(key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), tx=tx)
  return init_boxed


def create_sharded_state(
    init_params: Callable[[jax.Array], PyTree],
    tx: optax.GradientTransformation,
    rng: jax.Array,
    mesh: Mesh,
    rules: tuple[tuple[str, str | None], ...],
    params_transform: Callable[[PyTree], PyTree] | None = None,
) -> tuple[TrainState, TrainState]:
  """Initialises the train state directly into its shardings.

  The shardings are those of abstract_sharded_state; the real state is then created by one jit
  with those out_shardings, so no device ever holds more than its shard.

  Args:
    init_params: rng -> boxed params (as returned by `model.init(...)["params"]`).
    tx: the optimiser.
    rng: init key.
    mesh: the device mesh.
    rules: logical -> mesh axis rules.
    params_transform: optional unboxed-params -> params function applied before the optimiser
      state is built (pretrained weight import).

  Returns:
    (state, state_shardings): the state, and a TrainState-shaped tree of NamedShardings.
  """
  _, shardings = abstract_sharded_state(init_params, tx, rng, mesh, rules)
  init_boxed = _init_boxed(init_params, tx)
  state = jax.jit(lambda key: nn.unbox(init_boxed(key)), out_shardings=shardings)(rng)
  if params_transform is not None:
    params = params_transform(state.params)
    params = jax.device_put(params, shardings.params)
    state = jax.jit(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                         opt_state=tx.init(p), tx=tx),
                    out_shardings=shardings)(params)
  return state, shardings
