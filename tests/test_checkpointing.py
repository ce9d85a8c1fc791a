"""State creation from an abstract state, and Orbax save / restore with a Grain iterator."""

import json
import logging
import os
import shutil
import signal

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

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


def _toy_checkpointer(directory, **kwargs):
  kwargs = dict(dict(keep=5, save_every_steps=1, async_save=False, save_data_iterator=False),
                **kwargs)
  return checkpointing.Checkpointer(str(directory), **kwargs)


def _two_complete_steps(tmp_path):
  """Saves steps 1 and 2 of the toy state; returns (directory, state at step 2)."""
  mesh = _mesh()
  model, (state, _) = _make_state(mesh)
  ckpt = _toy_checkpointer(tmp_path / "c")
  ckpt.save(1, state)
  state2 = _step(model, state, jnp.ones((2, 3)))
  ckpt.save(2, state2)
  ckpt.close()
  return tmp_path / "c", state2


def _leave_incomplete_steps(directory) -> list[str]:
  """The states a killed process can leave next to complete steps, as Orbax 0.12 writes them."""
  complete = directory / "2"
  # Killed inside a save, even after the commit file was written but before the rename.
  shutil.copytree(complete, directory / "3.orbax-checkpoint-tmp")
  # A step directory without a commit marker (killed while Orbax deleted it, or written by hand).
  shutil.copytree(complete, directory / "4")
  os.remove(directory / "4" / "commit_success.txt")
  metadata = json.loads((directory / "4" / "_CHECKPOINT_METADATA").read_text())
  del metadata["commit_timestamp_nsecs"]
  (directory / "4" / "_CHECKPOINT_METADATA").write_text(json.dumps(metadata))
  # Committed, but the state's metadata is gone (killed while Orbax deleted it).
  shutil.copytree(complete, directory / "5")
  os.remove(directory / "5" / "state" / "_METADATA")
  return ["3.orbax-checkpoint-tmp", "4", "5"]


def _warnings(caplog, text):
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and text in r.getMessage()]


def test_incomplete_steps_are_skipped_with_one_warning_and_deleted(tmp_path, caplog):
  directory, state2 = _two_complete_steps(tmp_path)
  incomplete = _leave_incomplete_steps(directory)
  caplog.set_level(logging.WARNING)
  ckpt = _toy_checkpointer(directory)
  [warning] = _warnings(caplog, "Skipping incomplete checkpoints")
  assert all(name in warning for name in incomplete), warning
  assert sorted(os.listdir(directory)) == ["1", "2"]
  _, (template, _) = _make_state(_mesh())
  step, restored = ckpt.restore_latest(template)
  assert step == 2
  np.testing.assert_array_equal(restored.params["kernel"], state2.params["kernel"])
  ckpt.save(4, restored)  # the step of a deleted incomplete directory can be saved again
  ckpt.close()
  assert _toy_checkpointer(directory).all_steps() == [1, 2, 4]


def test_evaluation_skips_incomplete_steps_without_deleting_them(tmp_path, caplog):
  directory, _ = _two_complete_steps(tmp_path)
  incomplete = _leave_incomplete_steps(directory)
  caplog.set_level(logging.WARNING)
  ckpt = _toy_checkpointer(directory, read_only=True)
  assert len(_warnings(caplog, "Skipping incomplete checkpoints")) == 1
  _, (template, _) = _make_state(_mesh())
  assert ckpt.restore_state(template)[0] == 2
  assert set(incomplete) <= set(os.listdir(directory))


def test_a_step_committed_by_orbax_0_11_counts_as_complete(tmp_path):
  """Orbax 0.11 renamed the step into place without commit_success.txt; its step metadata holds
  the commit timestamp."""
  directory, _ = _two_complete_steps(tmp_path)
  shutil.copytree(directory / "2", directory / "7")
  os.remove(directory / "7" / "commit_success.txt")
  assert _toy_checkpointer(directory, read_only=True).all_steps() == [1, 2, 7]


def test_checkpoint_of_another_model_is_refused_naming_the_parameter(tmp_path):
  directory, _ = _two_complete_steps(tmp_path)
  opt = ml_collections.ConfigDict(dict(learning_rate=1e-2, end_learning_rate_factor=0.1,
                                       warmup_steps=1, weight_decay=0.1, b1=0.9, b2=0.99,
                                       grad_clip_norm=1.0))
  tx = state_lib.create_optimizer(opt, state_lib.learning_rate_schedule(opt, 10))
  wider = lambda key: _Toy().init(key, jnp.ones((1, 5)))["params"]  # kernel [5, 4], not [3, 4]
  template, _ = state_lib.create_sharded_state(wider, tx, jax.random.key(0), _mesh(),
                                               ((sharding.BATCH, "data"),))
  with pytest.raises(checkpointing.WorkdirError) as raised:
    _toy_checkpointer(directory).restore_latest(template)
  message = str(raised.value)
  assert "\n" not in message
  assert message.startswith(f"the checkpoint at step 2 in {directory} is from another model: "
                            f"params/kernel has shape (3, 4) there but (5, 4) in this config "
                            f"(and 2 more differences)"), message  # Adam's mu and nu
  assert "new --workdir" in message


_TENSORSTORE_ENOSPC = ('RESOURCE_EXHAUSTED: Error writing "kernel/0" in OCDBT database at local '
                       'file "/ckpt/2.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/": Failed '
                       'to write 4096 bytes to file 5: No space left on device '
                       "[os_error_code='28']")


def test_a_failed_asynchronous_save_names_its_step_and_the_one_kept(tmp_path, monkeypatch):
  """Injects the error TensorStore raises on a full disk where Orbax surfaces it: when waiting
  for the background write (the slow test fills a real tmpfs)."""
  mesh = _mesh()
  _, (state, _) = _make_state(mesh)
  ckpt = _toy_checkpointer(tmp_path / "c", async_save=True)
  ckpt.save(1, state)
  ckpt.wait_until_finished()
  ckpt.save(2, state)

  def fail():
    raise ValueError(_TENSORSTORE_ENOSPC)
  manager = ckpt._manager  # pylint: disable=protected-access
  monkeypatch.setattr(manager, "wait_until_finished", fail)
  with pytest.raises(checkpointing.WorkdirError) as raised:
    ckpt.save(3, state)  # waits for step 2 first
  assert str(raised.value).startswith(
      f"could not write the checkpoint for step 2 to {tmp_path / 'c'}: No space left on device "
      f"(errno 28); kept the complete checkpoint at step 1;")
  monkeypatch.undo()
  ckpt.close()


def test_a_bug_during_a_save_keeps_its_traceback(tmp_path, monkeypatch):
  _, (state, _) = _make_state(_mesh())
  ckpt = _toy_checkpointer(tmp_path / "c")

  def bug(*args, **kwargs):
    raise TypeError("not a disk error")
  monkeypatch.setattr(ckpt._manager, "save", bug)  # pylint: disable=protected-access
  with pytest.raises(TypeError, match="not a disk error"):
    ckpt.save(1, state)


def test_sigterm_on_one_process_stops_at_the_current_step_and_the_handler_is_restored(tmp_path):
  before = signal.getsignal(signal.SIGTERM)
  ckpt = _toy_checkpointer(tmp_path / "c")
  ckpt.install_preemption_handler()
  assert not ckpt.reached_preemption(1)
  os.kill(os.getpid(), signal.SIGTERM)
  assert ckpt.reached_preemption(2)
  ckpt.close()
  assert signal.getsignal(signal.SIGTERM) is before
