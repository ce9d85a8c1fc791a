"""Options that change how the train step computes, not what: gradient accumulation over the
global batch, remat policies, and the step compiled from shapes (clipmed/step_builder.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import input_pipeline
from clipmed import errors, step_builder, train, train_step
from configs import common, tiny


@pytest.fixture(scope="module")
def full_method(tiny_data_dir):
  """(config, setup, one real batch) of configs/tiny.py with the full method: hard negatives,
  report graphs and three soft-label streams, whose targets depend on the whole batch."""
  config = tiny.get_config(f"data_dir={tiny_data_dir},evals=none")
  common.apply_row(config, "clip_ng_dtcg")
  s = train.setup(config)
  it = input_pipeline.create_train_iterator(
      config.data, source=s.dataset.source("train"), tokenizer=s.dataset.tokenizer,
      spec=s.batch_spec, class_names=s.dataset.class_names, global_batch_size=config.batch_size,
      seed=0)
  return config, s, input_pipeline.make_global(next(it), s.mesh, s.data_axes)


def _grads(s, batch, k):
  rng = jax.random.key(3)
  if k == 1:
    def compute(params):
      outputs = s.model.apply({"params": params}, batch, train=True, rngs={"dropout": rng})
      loss, terms = s.make_loss_fn()(outputs, batch)
      return loss, terms
    (loss, terms), grads = jax.jit(jax.value_and_grad(compute, has_aux=True))(s.state.params)
    return loss, terms, grads
  fn = functools.partial(train_step._accumulated_loss_and_grads,  # pylint: disable=protected-access
                         model=s.model, loss_fn=s.make_loss_fn(), k=k)
  loss, _, terms, grads = jax.jit(fn)(s.state.params, batch, rng)
  return loss, terms, grads


@pytest.mark.slow
def test_accumulation_gives_the_global_batch_loss_and_gradient(full_method):
  _, s, batch = full_method
  k = 2
  loss, terms, grads = _grads(s, batch, 1)
  loss_k, terms_k, grads_k = _grads(s, batch, k)
  np.testing.assert_allclose(float(loss_k), float(loss), rtol=1e-5)
  for name in terms:
    np.testing.assert_allclose(float(terms_k[name]), float(terms[name]), rtol=1e-4, atol=1e-6)
  for g, g_k in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_k)):
    np.testing.assert_allclose(np.asarray(g_k), np.asarray(g), rtol=1e-4,
                               atol=1e-5 * float(jnp.max(jnp.abs(g))) + 1e-8)
  # What the test tells apart: per-micro-batch losses (soft labels within each micro-batch) do not
  # average to the global batch's loss.
  apply = jax.jit(lambda params, b: s.model.apply({"params": params}, b, train=False))
  outputs = apply(s.state.params, batch)
  rows = np.arange(8)
  micro = [jax.tree.map(lambda x, j=j: x[rows % k == j] if x.ndim else x, (outputs, batch))
           for j in range(k)]
  loss_fn = jax.jit(s.make_loss_fn())
  mean_micro = np.mean([float(loss_fn(o, b)[0]) for o, b in micro])
  assert abs(mean_micro - float(loss)) > 1e-3 * abs(float(loss))


@pytest.mark.slow
def test_an_accumulated_step_matches_the_plain_step(full_method):
  config, s, batch = full_method
  results = {}
  for k in (1, 2):  # through the compiled train step this time
    config_k = config.copy_and_resolve_references()
    config_k.grad_accum_steps = k
    parts = step_builder.build_step_parts(config_k, vocab_size=len(s.dataset.tokenizer),
                                          num_classes=len(s.dataset.class_names))
    state = jax.tree.map(jnp.copy, s.state).replace(tx=parts.tx)  # donated below
    compiled = parts.compile_train_step(config.batch_size)  # the path training takes
    _, metrics, info = compiled(state, batch, s.train_rng)
    results[k] = metrics.compute(), info
  (m1, i1), (m2, i2) = results[1], results[2]
  assert bool(i1["finite"]) and bool(i2["finite"])
  np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m2["grad_norm"]), float(m1["grad_norm"]), rtol=1e-4)


def test_grad_accum_steps_must_divide_the_batch(tiny_data_dir):
  config = tiny.get_config(f"data_dir={tiny_data_dir}")
  config.grad_accum_steps = 3
  with pytest.raises(errors.ConfigError, match="grad_accum_steps=3"):
    train.validate_config(config)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["dots_saveable", "dots_with_no_batch_dims_saveable"])
def test_remat_policies_give_the_same_gradients(full_method, policy):
  config, s, batch = full_method
  loss, _, grads = _grads(s, batch, 1)
  remat = config.copy_and_resolve_references()
  remat.model.remat, remat.model.remat_policy = True, policy
  parts = step_builder.build_step_parts(remat, vocab_size=len(s.dataset.tokenizer),
                                        num_classes=len(s.dataset.class_names))

  def compute(params):
    outputs = parts.model.apply({"params": params}, batch, train=True,
                                rngs={"dropout": jax.random.key(3)})
    return parts.make_loss_fn()(outputs, batch)[0]

  loss_r, grads_r = jax.jit(jax.value_and_grad(compute))(s.state.params)
  np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-6)
  for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):  # rounding: XLA reorders
    np.testing.assert_allclose(np.asarray(g_r), np.asarray(g), rtol=1e-4,
                               atol=1e-5 * float(jnp.max(jnp.abs(g))) + 1e-8)


def test_unknown_remat_policy_is_a_config_error(tiny_data_dir):
  config = tiny.get_config(f"data_dir={tiny_data_dir}")
  config.model.remat_policy = "everything"
  with pytest.raises(errors.ConfigError, match="remat_policy"):
    train.validate_config(config)

