"""The pure train step.

Dependencies arrive as keyword arguments (bound with functools.partial in clipmed/train.py, where
the step is jitted exactly once with its shardings).
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from clu import metrics as clu_metrics

from clipmed import batch as batch_lib
from clipmed.state import TrainState

# (model outputs, batch) -> (scalar loss, {term name: scalar})
LossFn = Callable[[Mapping[str, Any], batch_lib.Batch], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  """Over the steps between two log lines: loss and grad_norm averaged over the finite steps,
  skipped_steps the number of steps skipped for a non-finite loss or gradient."""
  loss: clu_metrics.Average.from_output("loss")
  learning_rate: clu_metrics.LastValue.from_output("learning_rate")
  logit_scale: clu_metrics.LastValue.from_output("logit_scale")
  grad_norm: clu_metrics.Average.from_output("grad_norm")
  skipped_steps: clu_metrics.Average.from_output("skipped")  # reported as a count, see train.py


def _all_finite(tree: Any) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _finite_only(average: clu_metrics.Average, finite: jax.Array) -> clu_metrics.Average:
  """The same one-step Average, emptied when the step was not finite."""
  return average.replace(total=jnp.where(finite, average.total, 0.0),
                         count=average.count * finite.astype(average.count.dtype))


def train_step(state: TrainState, batch: batch_lib.Batch, rng: jax.Array, *, model: nn.Module,
               loss_fn: LossFn, schedule: optax.Schedule
               ) -> tuple[TrainState, TrainMetrics, dict[str, jax.Array]]:
  """One optimisation step; a step whose loss or gradients are not finite changes nothing.

  Args:
    state: the train state (donated by the caller).
    batch: global arrays of clipmed/batch.py, leading axis = global batch.
    rng: the train key; folded with the step so a resumed run draws the same randomness.
    model: the CLIPModel.
    loss_fn: (outputs, batch) -> (loss, terms).
    schedule: learning-rate schedule, for logging.

  Returns:
    (new state, metrics collection for this step, info): info holds "terms" (each loss term,
    "I->T/text", ...) and "finite" (bool scalar: False when the step was skipped). A skipped step
    keeps the parameters and the optimiser state; state.step still advances (it counts the
    batches consumed, so a resumed run continues with the same data and schedule).
  """
  step_rng = jax.random.fold_in(rng, state.step)

  def compute_loss(params):
    outputs = model.apply({"params": params}, batch, train=True, rngs={"dropout": step_rng})
    loss, terms = loss_fn(outputs, batch)
    return loss, (outputs, terms)

  (loss, (outputs, terms)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
  finite = jnp.isfinite(loss) & _all_finite(grads)
  updated = state.apply_gradients(grads)
  keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
  new_state = updated.replace(params=jax.tree.map(keep, updated.params, state.params),
                              opt_state=jax.tree.map(keep, updated.opt_state, state.opt_state))
  metrics = TrainMetrics.single_from_model_output(
      loss=loss, learning_rate=schedule(state.step), logit_scale=outputs["logit_scale"],
      grad_norm=optax.global_norm(grads), skipped=1.0 - finite.astype(jnp.float32))
  metrics = metrics.replace(loss=_finite_only(metrics.loss, finite),
                            grad_norm=_finite_only(metrics.grad_norm, finite))
  return new_state, metrics, {"terms": terms, "finite": finite}
