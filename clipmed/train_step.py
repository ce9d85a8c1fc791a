"""Pure train and embedding steps.

Dependencies arrive as keyword arguments (bound with functools.partial in clipmed/train.py, where
the steps are jitted exactly once with their shardings).
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import optax
from clu import metrics as clu_metrics

from clipmed.models import gcn
from clipmed.state import TrainState

Batch = Mapping[str, jax.Array]
# (model outputs, batch) -> (scalar loss, {term name: scalar})
LossFn = Callable[[Mapping[str, jax.Array], Batch], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  learning_rate: clu_metrics.LastValue.from_output("learning_rate")
  logit_scale: clu_metrics.LastValue.from_output("logit_scale")
  grad_norm: clu_metrics.Average.from_output("grad_norm")


GRAPH_PREFIX = "graph_"
NEG_GRAPH_PREFIX = "neg_graph_"


def model_inputs(batch: Batch) -> dict[str, Any]:
  """The arguments of CLIPModel.__call__ taken from a batch.

  Hard-negative reports (neg_input_ids, neg_attention_mask) and report graphs (arrays prefixed
  "graph_" / "neg_graph_", see input_pipeline/graphs.py) are passed when the batch has them.
  """
  inputs = dict(images=batch["image"], input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"])
  if "neg_input_ids" in batch:
    inputs.update(neg_input_ids=batch["neg_input_ids"],
                  neg_attention_mask=batch["neg_attention_mask"])
  for name, prefix in (("graph", GRAPH_PREFIX), ("neg_graph", NEG_GRAPH_PREFIX)):
    arrays = gcn.strip_prefix(batch, prefix)
    if arrays:
      inputs[name] = arrays
  return inputs


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, model: nn.Module,
               loss_fn: LossFn, schedule: optax.Schedule
               ) -> tuple[TrainState, TrainMetrics, dict[str, jax.Array]]:
  """One optimisation step.

  Args:
    state: the train state (donated by the caller).
    batch: global arrays, leading axis = global batch: image [B,H,W,C], input_ids [B,L],
      attention_mask [B,L], labels [B,14] (and the hard-negative / graph fields the loss uses).
    rng: the train key; folded with the step so a resumed run draws the same randomness.
    model: the CLIPModel.
    loss_fn: (outputs, batch) -> (loss, terms).
    schedule: learning-rate schedule, for logging.

  Returns:
    (new state, metrics collection for this step, loss terms).
  """
  step_rng = jax.random.fold_in(rng, state.step)

  def compute_loss(params):
    outputs = model.apply({"params": params}, **model_inputs(batch), train=True,
                          rngs={"dropout": step_rng})
    loss, terms = loss_fn(outputs, batch)
    return loss, (outputs, terms)

  (loss, (outputs, terms)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads)
  metrics = TrainMetrics.single_from_model_output(
      loss=loss, learning_rate=schedule(state.step), logit_scale=outputs["logit_scale"],
      grad_norm=optax.global_norm(grads))
  return new_state, metrics, terms


def embed_images(params: Any, images: jax.Array, *, model: nn.Module) -> jax.Array:
  """[B,H,W,C] -> [B,D] L2-normalised image embeddings (eval mode)."""
  return model.apply({"params": params}, images, method=model.encode_image)


def embed_texts(params: Any, input_ids: jax.Array, attention_mask: jax.Array, *,
                model: nn.Module) -> jax.Array:
  """[B,L] tokens -> [B,D] L2-normalised text embeddings (eval mode)."""
  return model.apply({"params": params}, input_ids, attention_mask, method=model.encode_text)
