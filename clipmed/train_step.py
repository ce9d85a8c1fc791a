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
from clipmed import errors
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


def _finite_only(average: clu_metrics.Average, finite: jax.Array) -> clu_metrics.Average:
  """The same one-step Average, emptied when the step was not finite."""
  return average.replace(total=jnp.where(finite, average.total, 0.0),
                         count=average.count * finite.astype(average.count.dtype))


def check_grad_accum_steps(grad_accum_steps: int, batch_size: int, data_parallel: int) -> None:
  """Raises ConfigError unless the global batch splits into micro-batches that split evenly over
  the `data_parallel` devices of the batch axes."""
  k = int(grad_accum_steps)
  if k < 1 or batch_size % (k * data_parallel):
    raise errors.ConfigError(
        f"config.grad_accum_steps={grad_accum_steps} must be >= 1 and divide the batch: "
        f"config.batch_size={batch_size} must be a multiple of grad_accum_steps x {data_parallel} "
        "data-parallel devices")


def _to_micro(x: jax.Array, k: int) -> jax.Array:
  """[B, ...] -> [k, B/k, ...]; micro-batch j holds rows j, j + k, j + 2k, ... so that each one
  is spread over all devices of a batch-sharded array (a contiguous split would put micro-batch j
  on 1/k of the devices)."""
  return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)


def _from_micro(x: jax.Array) -> jax.Array:
  """Inverse of _to_micro: [k, B/k, ...] -> [B, ...] in the original row order."""
  return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def _accumulated_loss_and_grads(params, batch, step_rng, *, model, loss_fn, k):
  """The loss over the global batch and its exact gradient, holding activations for one
  micro-batch of B/k rows at a time (GradCache, Gao et al. 2021).

  The soft-label targets depend on the whole batch, so the loss cannot be summed over
  micro-batches. Instead: (1) embed every micro-batch without keeping activations; (2) the loss
  over the global [B, D] embeddings and its gradient with respect to them; (3) per micro-batch,
  embed again and backpropagate those embedding gradients through the encoders, summing the
  parameter gradients. Each row's embedding depends on that row only, so the sum is the gradient
  of the un-accumulated step; the forward pass runs twice (about a third more FLOPs). Micro-batch
  j draws its dropout with fold_in(step key, j) in both passes, so with dropout on the masks
  differ from an un-accumulated step's (same distribution).
  """
  micro = jax.tree.map(lambda x: _to_micro(x, k), batch)
  index = jnp.arange(k)

  def embed(p, micro_batch, j):
    return model.apply({"params": p}, micro_batch, train=True,
                       rngs={"dropout": jax.random.fold_in(step_rng, j)})

  stacked = jax.lax.map(lambda xs: embed(params, *xs), (micro, index))  # leaves [k, B/k, D]
  scale = stacked.pop("logit_scale")[0]
  outputs = dict(jax.tree.map(_from_micro, stacked), logit_scale=scale)  # [B, D] leaves
  (loss, terms), d_outputs = jax.value_and_grad(loss_fn, has_aux=True)(outputs, batch)
  d_scale = d_outputs.pop("logit_scale")
  d_micro = dict(jax.tree.map(lambda x: _to_micro(x, k), d_outputs),
                 logit_scale=jnp.full((k,), d_scale / k, d_scale.dtype))

  def backward(grads, xs):
    micro_batch, j, cotangent = xs
    _, vjp = jax.vjp(lambda p: embed(p, micro_batch, j), params)
    return jax.tree.map(jnp.add, grads, vjp(cotangent)[0]), None

  grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params), (micro, index, d_micro))
  return loss, outputs, terms, grads


def train_step(state: TrainState, batch: batch_lib.Batch, rng: jax.Array, *, model: nn.Module,
               loss_fn: LossFn, schedule: optax.Schedule, grad_accum_steps: int = 1
               ) -> tuple[TrainState, TrainMetrics, dict[str, jax.Array]]:
  """One optimisation step; a step whose loss or gradient norm is not finite changes nothing.

  Args:
    state: the train state (donated by the caller).
    batch: global arrays of clipmed/batch.py, leading axis = global batch.
    rng: the train key; folded with the step so a resumed run draws the same randomness.
    model: the CLIPModel.
    loss_fn: (outputs, batch) -> (loss, terms).
    schedule: learning-rate schedule, for logging.
    grad_accum_steps: k > 1 computes the same loss and gradient holding the activations of B/k
      rows at a time (see _accumulated_loss_and_grads).

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

  if grad_accum_steps > 1:
    loss, outputs, terms, grads = _accumulated_loss_and_grads(
        state.params, batch, step_rng, model=model, loss_fn=loss_fn, k=grad_accum_steps)
  else:
    (loss, (outputs, terms)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
        state.params)
  grad_norm = optax.global_norm(grads)
  # A non-finite gradient element makes the norm non-finite (so does a norm that overflows).
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.apply_gradients(grads)
  # A branch rather than an element-wise select of new or old parameters and Adam moments: the
  # select held a third copy of the state (paper shapes, batch 8: 5.63 -> 5.13 GB per device).
  new_state = jax.lax.cond(finite, lambda: updated, lambda: state.replace(step=updated.step))
  metrics = TrainMetrics.single_from_model_output(
      loss=loss, learning_rate=schedule(state.step), logit_scale=outputs["logit_scale"],
      grad_norm=grad_norm, skipped=1.0 - finite.astype(jnp.float32))
  metrics = metrics.replace(loss=_finite_only(metrics.loss, finite),
                            grad_norm=_finite_only(metrics.grad_norm, finite))
  return new_state, metrics, {"terms": terms, "finite": finite}
