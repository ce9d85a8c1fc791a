"""State creation from an abstract state, and Orbax save / restore with a Grain iterator."""

import os

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from clipmed import checkpointing, sharding, state as state_lib


class _Toy(nn.Module):

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.with_logical_partitioning(
        nn.initializers.normal(0.1), (sharding.EMBED, sharding.MLP)), (x.shape[-1], 4))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, (sharding.MLP,)),
                      (4,))
    return x @ kernel + bias


def _make_state(mesh):
  opt = ml_collections.ConfigDict(dict(learning_rate=1e-2, end_learning_rate_factor=0.1,
                                       warmup_steps=1, weight_decay=0.1, b1=0.9, b2=0.99,
                                       grad_clip_norm=1.0))
  tx = state_lib.create_optimizer(opt, state_lib.learning_rate_schedule(opt, 10))
  model = _Toy()
  init = lambda key: model.init(key, jnp.ones((1, 3)))["params"]
  rules = ((sharding.BATCH, "data"),)
  return model, state_lib.create_sharded_state(init, tx, jax.random.key(0), mesh, rules)


def _mesh():
  cfg = ml_collections.ConfigDict(dict(shape=dict(data=-1), rules=[(sharding.BATCH, "data")]))
  return sharding.create_mesh(cfg)


def _step(model, state, x):
  def loss(p):
    return jnp.mean(model.apply({"params": p}, x) ** 2)
  grads = jax.grad(loss)(state.params)
  return state.apply_gradients(grads)


def test_sharded_state_is_unboxed_and_trains():
  mesh = _mesh()
  model, (state, shardings) = _make_state(mesh)
  assert isinstance(state.params["kernel"], jax.Array)
  assert state.params["kernel"].shape == (3, 4)
  assert shardings.params["kernel"].mesh.shape == mesh.shape
  x = jnp.ones((2, 3))
  before = float(jnp.mean(model.apply({"params": state.params}, x) ** 2))
  for _ in range(5):
    state = _step(model, state, x)
  after = float(jnp.mean(model.apply({"params": state.params}, x) ** 2))
  assert int(state.step) == 5
  assert after < before


def test_checkpoint_round_trip_with_data_iterator(tmp_path):
  mesh = _mesh()
  model, (state, _) = _make_state(mesh)
  ds = grain.MapDataset.range(100).shuffle(seed=3).batch(4)
  it = iter(ds.to_iter_dataset())
  for _ in range(3):
    next(it)
  state = _step(model, state, jnp.ones((2, 3)))

  ckpt = checkpointing.Checkpointer(str(tmp_path / "ckpt"), keep=2, save_every_steps=1,
                                    async_save=True)
  ckpt.save(1, state, it)
  ckpt.wait_until_finished()
  expected_batches = [next(it) for _ in range(3)]

  # A fresh process would build a new state and iterator, then restore both.
  _, (fresh, _) = _make_state(mesh)
  fresh_it = iter(ds.to_iter_dataset())
  restored = checkpointing.Checkpointer(str(tmp_path / "ckpt"), keep=2, save_every_steps=1,
                                        async_save=True).restore_latest(fresh, fresh_it)
  assert restored is not None
  step, restored_state = restored
  assert step == 1
  np.testing.assert_array_equal(restored_state.params["kernel"], state.params["kernel"])
  assert int(restored_state.step) == 1
  for want in expected_batches:
    np.testing.assert_array_equal(next(fresh_it), want)


def test_restore_skips_an_unreadable_latest_step(tmp_path):
  mesh = _mesh()
  model, (state, _) = _make_state(mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "c"), keep=3, save_every_steps=1,
                                    async_save=False, save_data_iterator=False)
  ckpt.save(1, state)
  state2 = _step(model, state, jnp.ones((2, 3)))
  ckpt.save(2, state2)
  ckpt.wait_until_finished()
  # Simulate a step directory whose contents never made it to disk.
  step_dir = tmp_path / "c" / "2"
  for root, _, files in os.walk(step_dir):
    for f in files:
      os.remove(os.path.join(root, f))
  fresh = checkpointing.Checkpointer(str(tmp_path / "c"), keep=3, save_every_steps=1,
                                     async_save=False, save_data_iterator=False)
  _, (template, _) = _make_state(mesh)
  step, restored = fresh.restore_latest(template)
  assert step == 1
  np.testing.assert_array_equal(restored.params["kernel"], state.params["kernel"])


def test_restore_returns_none_without_checkpoints(tmp_path):
  mesh = _mesh()
  _, (state, _) = _make_state(mesh)
  ckpt = checkpointing.Checkpointer(str(tmp_path / "empty"), keep=1, save_every_steps=1,
                                    async_save=False)
  assert ckpt.restore_latest(state) is None
