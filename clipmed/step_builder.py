"""The jitted train step and everything it is built from, from shapes only.

One code path for training (clipmed/train.py), the memory preflight and `--dry_run`
(clipmed/preflight.py) and the train-step benchmark (clipmed/benchmark/): the mesh, the model,
the loss, the optimiser, the abstract state (jax.eval_shape, no weights) and its shardings, the
single `jax.jit` of clipmed/train_step.py with its shardings and donation, lowered and compiled for
a batch of the config's shapes. Nothing here reads data or downloads weights.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from clipmed import batch as batch_lib
from clipmed import losses, sharding, state as state_lib, train_step
from clipmed.models import clip as clip_lib


@dataclasses.dataclass
class StepParts:
  """What the train step is made of; shapes only (no data, no initialised weights)."""
  mesh: Any
  rules: tuple[tuple[str, str | None], ...]  # logical -> mesh axis rules
  data_axes: tuple[str, ...]
  batch_sharding: Any
  batch_spec: batch_lib.BatchSpec
  loss_spec: losses.LossSpec
  model: Any
  schedule: Any
  tx: Any
  init_params: Any  # rng -> boxed params (model.init)
  abstract_state: state_lib.TrainState  # jax.ShapeDtypeStruct leaves with their shardings
  state_shardings: Any
  grad_accum_steps: int

  def make_loss_fn(self):
    """(model outputs, batch) -> (loss, terms), sharded over the batch axes of the mesh."""
    return functools.partial(losses.sharded_clinic_loss, spec=self.loss_spec, mesh=self.mesh,
                             data_axes=self.data_axes)

  def jit_train_step(self):
    """The train step, jitted (the one place it is) with its shardings; the state is donated."""
    return jax.jit(
        functools.partial(train_step.train_step, model=self.model, loss_fn=self.make_loss_fn(),
                          schedule=self.schedule, grad_accum_steps=self.grad_accum_steps),
        in_shardings=(self.state_shardings, self.batch_sharding, None),
        out_shardings=(self.state_shardings, None, None),
        donate_argnums=(0,))

  def abstract_batch(self, batch_size: int) -> dict[str, Any]:
    """The global batch as jax.ShapeDtypeStruct leaves with the batch sharding."""
    return jax.tree.map(
        lambda sd: jax.ShapeDtypeStruct(sd[0], sd[1], sharding=self.batch_sharding),
        self.batch_spec.shapes(batch_size), is_leaf=lambda x: isinstance(x, tuple))

  def compile_train_step(self, batch_size: int) -> jax.stages.Compiled:
    """The train step lowered and compiled for a global batch of `batch_size`, from shapes only.

    The result is called like the jitted step, (state, batch, rng) -> (state, metrics, info),
    with a state in `state_shardings` and a batch in `batch_sharding`.
    """
    rng = jax.eval_shape(lambda: jax.random.key(0))
    with self.mesh, nn.logical_axis_rules(self.rules):
      return self.jit_train_step().lower(self.abstract_state, self.abstract_batch(batch_size),
                                         rng).compile()


def build_step_parts(config: ml_collections.ConfigDict, *, vocab_size: int, num_classes: int,
                     init_rng: jax.Array | None = None) -> StepParts:
  """The train step's parts for a (validated) config.

  Args:
    config: the whole config.
    vocab_size: the tokenizer's vocabulary size (used when config.model.text.vocab_size is 0).
    num_classes: the dataset's number of label classes K.
    init_rng: the init key (only its shape matters here; training passes the real one).
  """
  loss_spec = losses.LossSpec.from_config(config.loss, graph_enabled=config.model.graph.enabled)
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  model = clip_lib.create_model(config.model, vocab_size=vocab_size)
  schedule = state_lib.learning_rate_schedule(config.optimizer, config.num_train_steps)
  tx = state_lib.create_optimizer(config.optimizer, schedule)
  batch_spec = batch_lib.BatchSpec.from_config(config, num_classes=num_classes)
  dummy = batch_spec.zeros(1)

  def init_params(key):
    return model.init({"params": key, "dropout": key}, dummy, train=False)["params"]

  if init_rng is None:
    init_rng = jax.random.key(int(config.seed))
  abstract_state, state_shardings = state_lib.abstract_sharded_state(
      init_params, tx, init_rng, mesh, rules)
  return StepParts(mesh=mesh, rules=rules, data_axes=sharding.data_axes(config.mesh),
                   batch_sharding=sharding.batch_sharding(mesh, config.mesh),
                   batch_spec=batch_spec, loss_spec=loss_spec, model=model, schedule=schedule,
                   tx=tx, init_params=init_params, abstract_state=abstract_state,
                   state_shardings=state_shardings,
                   grad_accum_steps=int(config.grad_accum_steps))


def num_parameters(parts: StepParts) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(parts.abstract_state.params))
