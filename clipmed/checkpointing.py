"""Orbax checkpoints that hold the train state and the Grain iterator together.

A run always resumes from the latest complete checkpoint in its workdir. Orbax writes each step to a
temporary directory and renames it when complete, but a step directory can still be left incomplete
(a crash between the rename and the metadata write): restore falls back to the previous step.
On a single process Orbax's preemption sync point never fires, so SIGTERM is handled here.
"""

import os
import signal
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging

from clipmed import errors

STATE = "state"
DATA = "data"


class Checkpointer:
  """Saves and restores (train state, data iterator) under `<workdir>/checkpoints`."""

  def __init__(self, directory: str, *, keep: int, save_every_steps: int, async_save: bool,
               save_data_iterator: bool = True):
    self._directory = os.path.abspath(directory)
    self._save_every = int(save_every_steps)
    self._save_data = save_data_iterator
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(keep),
        enable_async_checkpointing=bool(async_save),
        cleanup_tmp_directories=True,
        create=True,
    )
    handlers = {STATE: ocp.StandardCheckpointHandler()}
    if save_data_iterator:
      handlers[DATA] = grain.checkpoint.CheckpointHandler()
    self._manager = ocp.CheckpointManager(self._directory, options=options,
                                          item_handlers=handlers)
    self._preempted = threading.Event()

  @property
  def directory(self) -> str:
    return self._directory

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def should_save(self, step: int, last_step: int) -> bool:
    return step == last_step or (self._save_every > 0 and step % self._save_every == 0)

  def save(self, step: int, state: Any, data_iterator: Any | None = None, *,
           force: bool = False) -> None:
    args = {STATE: ocp.args.StandardSave(state)}
    if self._save_data and data_iterator is not None:
      args[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**args), force=force)

  def _restore_first(self, steps: list[int], abstract_state: Any,
                     data_iterator: Any | None) -> tuple[int, Any] | None:
    """Restores the first readable checkpoint of `steps`; the iterator, if given, in place."""
    for step in steps:
      args = {STATE: ocp.args.StandardRestore(abstract_state)}
      if self._save_data and data_iterator is not None:
        args[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
      except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        logging.warning("Checkpoint at step %d in %s is incomplete or unreadable (%s).", step,
                        self._directory, e)
        continue
      return step, restored[STATE]
    return None

  def restore_latest(self, abstract_state: Any, data_iterator: Any | None = None
                     ) -> tuple[int, Any] | None:
    """Restores the newest complete checkpoint into `abstract_state`'s shapes and shardings.

    The data iterator, when given, is restored in place.

    Returns:
      (step, state), or None when the workdir has no usable checkpoint.
    """
    return self._restore_first(list(reversed(self.all_steps())), abstract_state, data_iterator)

  def restore_state(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any]:
    """Restores only the train state (evaluation), at `step` or the latest complete one."""
    steps = self.all_steps()
    if not steps:
      raise errors.FileError(f"no checkpoint in {self._directory}: train first with "
                             f"`python -m clipmed.main --config=... --workdir=...`")
    if step is not None and step not in steps:
      raise errors.FileError(f"no checkpoint for step {step} in {self._directory}; "
                             f"available steps: {steps}")
    candidates = [step] if step is not None else list(reversed(steps))
    restored = self._restore_first(candidates, abstract_state, data_iterator=None)
    if restored is None:
      raise errors.FileError(f"no readable checkpoint in {self._directory} (tried {candidates})")
    return restored

  # Preemption: SIGTERM sets a flag that the loop polls; on several processes Orbax's own sync
  # point agrees on the step.
  def install_preemption_handler(self) -> None:
    if threading.current_thread() is not threading.main_thread():
      return

    def handler(signum, frame):
      del frame
      logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)
      self._preempted.set()

    signal.signal(signal.SIGTERM, handler)

  def reached_preemption(self, step: int) -> bool:
    if self._preempted.is_set():
      return True
    if jax.process_count() > 1:
      return self._manager.reached_preemption(step)
    return False

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
