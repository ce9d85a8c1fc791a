"""Orbax checkpoints that hold the train state and the Grain iterator together.

A run always resumes from the latest complete checkpoint in its workdir. What "complete" means on a
POSIX filesystem (Orbax 0.11-0.12, atomic-rename mode, the default off GCS): Orbax writes step N
into `N.orbax-checkpoint-tmp` (0.11 adds `-<timestamp>`), writes every item, records
`commit_timestamp_nsecs` in `_CHECKPOINT_METADATA`, writes `commit_success.txt` (0.12 and later) and
only then renames the directory to `N`. A process killed at any moment therefore leaves either a
temporary directory or, if it dies while Orbax deletes an old step, a step directory with files
missing. A step directory counts as complete when it is named by its step, carries a commit marker
(`commit_success.txt` or the commit timestamp) and holds the metadata of the items to restore.
Anything else is skipped with one warning line; a training run deletes it, so that the step can be
saved again. A complete checkpoint that still fails to read falls back to the previous one.

Preemption: SIGTERM sets a flag that the training loop polls once per step. On several processes
the flags are combined by a one-element all-reduce (max), so that every process saves and stops at
the same step; see `_PreemptionVote` for its cost. `wait_for_all_processes` lines the processes up
before their first collectives.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from clipmed import errors
from clipmed.errors import WorkdirError

STATE = "state"
DATA = "data"

_STEP_DIR = re.compile(r"^(0|[1-9]\d*)$")  # Orbax's default step directory names
_TMP_MARK = ".orbax-checkpoint-tmp"  # in every temporary (unfinished) step directory name
_COMMIT_SUCCESS = "commit_success.txt"
_STEP_METADATA = "_CHECKPOINT_METADATA"
# The file an item directory must hold (None: only the directory; Grain writes a file per process).
_ITEM_METADATA = {STATE: "_METADATA", DATA: None}
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")  # how TensorStore reports a failed write


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` and checks that files can be created in it.

  Call before preparing data or compiling, so that a bad --workdir fails in seconds.

  Raises:
    WorkdirError: the directory (or a parent) cannot be created or written.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".clipmed-write-test-"):
      pass
  except OSError as e:
    inside = e.filename and os.path.abspath(e.filename).startswith(os.path.abspath(workdir))
    where = f" ({e.filename})" if e.filename and not inside else ""  # a parent that failed
    raise WorkdirError(f"cannot write to --workdir={workdir}: {e.strerror or e}{where}; "
                       f"choose a directory you can create and write to") from None


RUN_TOKENIZER = "tokenizer"  # <workdir>/tokenizer: the tokenizer the run was trained with
_FINGERPRINT = "fingerprint.txt"


def check_run_tokenizer(workdir: str, tokenizer: Any, fingerprint: str, *, save: bool) -> None:
  """Keeps the run's tokenizer with its checkpoints and refuses a different one.

  The first training process 0 saves `tokenizer` (and its fingerprint) in <workdir>/tokenizer;
  afterwards, resuming or evaluating with a tokenizer of another fingerprint (a re-prepared
  data_dir, another config.data.tokenizer) raises a ConfigError naming the fix, instead of
  silently mapping the reports to other token ids.

  Args:
    workdir: the run's directory.
    tokenizer: the tokenizer the config would use (a transformers fast tokenizer).
    fingerprint: its input_pipeline.tokenizer.tokenizer_fingerprint.
    save: store it when the run has none yet (training, process 0).
  """
  folder = os.path.join(workdir, RUN_TOKENIZER)
  path = os.path.join(folder, _FINGERPRINT)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      stored = f.read().strip()
    if stored != fingerprint:
      raise errors.ConfigError(
          f"the run in {workdir} was trained with another tokenizer (fingerprint {stored}, kept "
          f"in {folder}) than the one config.data gives now ({fingerprint}): the data_dir was "
          f"prepared differently or config.data.tokenizer changed. Use the run's tokenizer: "
          f"--config.data.tokenizer={folder}")
  elif save:
    tokenizer.save_pretrained(folder)
    with open(path, "w", encoding="utf-8") as f:
      f.write(fingerprint + "\n")


RUN_CONFIG = "config.json"  # <workdir>/config.json: the config the run was trained with


def save_run_config(workdir: str, config: Any) -> None:
  """Writes the run's config (an ml_collections.ConfigDict) as <workdir>/config.json, so that
  clipmed.predict and clipmed.export can rebuild the model from the workdir alone."""
  path = os.path.join(workdir, RUN_CONFIG)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=1, sort_keys=True) + "\n")
  os.replace(path + ".tmp", path)


def read_run_config(workdir: str) -> Any | None:
  """The ml_collections.ConfigDict of <workdir>/config.json, or None for a run that has none
  (trained before runs saved their config)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, RUN_CONFIG)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return ml_collections.ConfigDict(json.load(f))
  except json.JSONDecodeError as e:
    raise errors.FileError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}); delete it and "
                           "pass the training config explicitly") from None


def _is_complete(step_dir: str, items: tuple[str, ...]) -> bool:
  """Whether Orbax finished writing `step_dir` (named by its step) with all of `items`."""
  committed = os.path.exists(os.path.join(step_dir, _COMMIT_SUCCESS))
  if not committed:  # Orbax 0.11 marks a commit only in the step metadata.
    try:
      with open(os.path.join(step_dir, _STEP_METADATA), encoding="utf-8") as f:
        committed = json.load(f).get("commit_timestamp_nsecs") is not None
    except (OSError, ValueError, AttributeError):
      return False
  return committed and all(_item_present(os.path.join(step_dir, item), _ITEM_METADATA[item])
                           for item in items)


def _item_present(item_dir: str, metadata: str | None) -> bool:
  return os.path.exists(os.path.join(item_dir, metadata)) if metadata else os.path.isdir(item_dir)


def _path_name(path) -> str:
  """'params/image_encoder/patch_embed/kernel' for a pytree key path (dicts, attrs, sequences)."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{path: shape} of the arrays (or array metadata) in `tree`."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_name(path): tuple(leaf.shape) for path, leaf in leaves}


def wait_for_all_processes(name: str, timeout_s: int = 1800) -> None:
  """Returns when every process of the run has called this with the same name (one process: at
  once). A barrier of the coordination service, not a device collective.

  Training calls it before the first step: that step's collectives are the first between the
  processes' devices, and on CPU Gloo gives them 30 s to connect, which a process still compiling on
  a busy host can miss (`Gloo context initialization failed: ... GetKeyValue() timed out`).
  """
  if jax.process_count() > 1:
    ocp.multihost.get_barrier_sync_fn()(key=f"clipmed:{name}", timeout_ms=int(timeout_s) * 1000)


class _PreemptionVote:
  """Whether any process has been asked to stop, agreed by all processes at the same step.

  Each call contributes this process's flag to an all-reduce (max) over one int32 per device, and
  returns the result of the previous call's all-reduce. Every process therefore reads the same
  value at the same step, and stops one step after the first signal seen by any process. Reading a
  step late means the host never waits for the reduction: the cost per step is one tiny jitted
  dispatch, a one-element all-reduce across processes (microseconds over ICI, tens over DCN) and
  a scalar read that keeps the host at most one step ahead of the devices.
  """

  def __init__(self):
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("devices",),
                             axis_types=(jax.sharding.AxisType.Auto,))
    self._sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("devices"))
    self._max = jax.jit(jnp.max, out_shardings=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec()))
    self._previous = None

  def __call__(self, flag: bool) -> bool:
    shards = [jax.device_put(np.full((1,), flag, np.int32), d) for d in jax.local_devices()]
    flags = jax.make_array_from_single_device_arrays((jax.device_count(),), self._sharding,
                                                     shards)  # [num_devices]
    previous, self._previous = self._previous, self._max(flags)
    return previous is not None and bool(previous)


class Checkpointer:
  """Saves and restores (train state, data iterator) under `<workdir>/checkpoints`."""

  def __init__(self, directory: str, *, keep: int, save_every_steps: int, async_save: bool,
               save_data_iterator: bool = True, read_only: bool = False):
    """Opens `directory`, creating it unless `read_only`.

    Args:
      directory: the checkpoint directory, `<workdir>/checkpoints`.
      keep: how many checkpoints to keep.
      save_every_steps: save period in steps (0: only the last step).
      async_save: write in a background thread while training continues.
      save_data_iterator: also save/restore the Grain iterator (training), not only the state.
      read_only: never create, clean up or delete anything (evaluation, possibly while a
        training run writes to the same directory).
    """
    self._directory = os.path.abspath(directory)
    self._save_every = int(save_every_steps)
    self._save_data = save_data_iterator
    self._items = (STATE, DATA) if save_data_iterator else (STATE,)
    self._read_only = read_only
    self._skip_incomplete()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(keep),
        enable_async_checkpointing=bool(async_save),
        cleanup_tmp_directories=not read_only,
        create=not read_only,
    )
    handlers = {STATE: ocp.StandardCheckpointHandler()}
    if save_data_iterator:
      handlers[DATA] = grain.checkpoint.CheckpointHandler()
    self._manager = ocp.CheckpointManager(self._directory, options=options,
                                          item_handlers=handlers)
    self._preempted = threading.Event()
    self._previous_sigterm_handler = None
    self._vote = _PreemptionVote() if jax.process_count() > 1 else None
    self._pending_step = None  # the step of an asynchronous save that may still be running
    self._unreadable = set()  # complete-looking steps that failed to restore

  @property
  def directory(self) -> str:
    return self._directory

  def _scan(self) -> tuple[list[int], list[str]]:
    """(complete steps ascending, names of incomplete step directories) on disk."""
    if not os.path.isdir(self._directory):
      return [], []
    complete, incomplete = [], []
    for name in sorted(os.listdir(self._directory)):
      path = os.path.join(self._directory, name)
      if _TMP_MARK in name:
        incomplete.append(name)
      elif _STEP_DIR.match(name) and os.path.isdir(path):
        if _is_complete(path, self._items):
          complete.append(int(name))
        else:
          incomplete.append(name)
    return sorted(complete), incomplete

  def _skip_incomplete(self) -> None:
    """Warns about incomplete step directories; a training run deletes them (process 0)."""
    _, incomplete = self._scan()
    if incomplete:
      logging.warning("Skipping incomplete checkpoints in %s (being written, or left by a run "
                      "that stopped while writing or deleting them): %s%s", self._directory,
                      ", ".join(incomplete), "" if self._read_only else "; deleting them")
    if self._read_only:
      return
    if jax.process_index() == 0:
      for name in incomplete:
        path = os.path.join(self._directory, name)
        try:
          shutil.rmtree(path)
        except OSError as e:  # left in place, Orbax would refuse to save that step again
          raise WorkdirError(f"cannot delete the incomplete checkpoint {path}: "
                             f"{e.strerror or e}; delete it by hand, then rerun") from None
    if jax.process_count() > 1:  # nobody lists steps while process 0 deletes
      multihost_utils.sync_global_devices("clipmed:checkpoint_cleanup")

  def all_steps(self) -> list[int]:
    """Steps of the complete checkpoints, ascending."""
    return self._scan()[0]

  def should_save(self, step: int, last_step: int) -> bool:
    return step == last_step or (self._save_every > 0 and step % self._save_every == 0)

  def save(self, step: int, state: Any, data_iterator: Any | None = None, *,
           force: bool = False) -> None:
    """Starts saving `step` (asynchronously if configured).

    Raises:
      WorkdirError: the disk is full or failed while writing this or the previous save; the
        message names the step that failed and the complete checkpoint that is kept.
    """
    self.wait_until_finished()  # so that a failed previous save is reported as that step's
    args = {STATE: ocp.args.StandardSave(state)}
    if self._save_data and data_iterator is not None:
      args[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    with self._reporting_disk_errors(step):
      if step in self._unreadable:  # superseded by this save; Orbax refuses to overwrite it
        self._manager.delete(step)
        self._unreadable.discard(step)
      self._manager.save(step, args=ocp.args.Composite(**args), force=force)
    self._pending_step = step

  def wait_until_finished(self) -> None:
    with self._reporting_disk_errors(self._pending_step):
      self._manager.wait_until_finished()
    self._pending_step = None

  @contextlib.contextmanager
  def _reporting_disk_errors(self, step: int | None) -> Iterator[None]:
    """Turns an OS error while writing checkpoint `step` into a one-line WorkdirError."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      os_error = _os_error(e)
      if os_error is None or step is None:
        raise
      kept = [s for s in self.all_steps() if s < step]
      kept_text = (f"kept the complete checkpoint at step {kept[-1]}" if kept else
                   "no earlier checkpoint exists, so a rerun starts from step 0")
      raise WorkdirError(
          f"could not write the checkpoint for step {step} to {self._directory}: "
          f"{os_error.strerror or os_error} (errno {os_error.errno}); {kept_text}; free space or "
          f"fix the disk, then rerun the same command to resume") from e

  def _check_matches(self, step: int, abstract_state: Any) -> None:
    """Raises WorkdirError when checkpoint `step` holds arrays of other shapes than the config's.

    Compares the checkpoint's stored array metadata with `abstract_state`, before any data is read.
    """
    metadata = self._manager.item_metadata(step)[STATE]
    if metadata is None:
      raise FileNotFoundError(f"no readable array metadata for step {step}")
    stored = _shapes(metadata)
    wanted = _shapes(abstract_state)
    differences = []
    for path, shape in wanted.items():
      if path not in stored:
        differences.append(f"{path} (shape {shape}) is in this config but not there")
      elif stored[path] != shape:
        differences.append(f"{path} has shape {stored[path]} there but {shape} in this config")
    differences += [f"{path} (shape {shape}) is there but not in this config"
                    for path, shape in stored.items() if path not in wanted]
    if differences:
      more = f" (and {len(differences) - 1} more differences)" if len(differences) > 1 else ""
      raise WorkdirError(
          f"the checkpoint at step {step} in {self._directory} is from another model: "
          f"{differences[0]}{more}; train this config with a new --workdir, or resume with the "
          f"config that run was trained with")

  def _restore_first(self, steps: list[int], abstract_state: Any,
                     data_iterator: Any | None) -> tuple[int, Any] | None:
    """Restores the first readable checkpoint of `steps`; the iterator, if given, in place."""
    for step in steps:
      args = {STATE: ocp.args.StandardRestore(abstract_state)}
      if self._save_data and data_iterator is not None:
        args[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
      try:
        self._check_matches(step, abstract_state)
        restored = self._manager.restore(step, args=ocp.args.Composite(**args))
      except (FileNotFoundError, ValueError, KeyError, OSError) as e:
        logging.warning("Checkpoint at step %d in %s is unreadable (%s); trying an earlier one.",
                        step, self._directory, e)
        self._unreadable.add(step)
        continue
      return step, restored[STATE]
    return None

  def restore_latest(self, abstract_state: Any, data_iterator: Any | None = None
                     ) -> tuple[int, Any] | None:
    """Restores the newest complete checkpoint into `abstract_state`'s shapes and shardings.

    The data iterator, when given, is restored in place.

    Returns:
      (step, state), or None when the workdir has no usable checkpoint.

    Raises:
      WorkdirError: the checkpoint's arrays do not have the shapes of `abstract_state`.
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

  def install_preemption_handler(self) -> None:
    """Makes SIGTERM request a checkpoint and a clean stop (see `reached_preemption`).

    Replaces JAX's own SIGTERM notifier on several processes: `reached_preemption` agrees on the
    step itself. `close` puts the previous handler back.
    """
    if threading.current_thread() is not threading.main_thread():
      return

    def handler(signum, frame):
      del frame
      logging.warning("Received signal %d: saving a checkpoint and stopping.", signum)
      self._preempted.set()

    self._previous_sigterm_handler = signal.signal(signal.SIGTERM, handler)

  def reached_preemption(self, step: int) -> bool:
    """Whether to save and stop after `step`; the same answer on every process.

    Call exactly once per step, on every process. On one process this is the local SIGTERM flag.
    On several, a process's signal stops all of them one step later (see `_PreemptionVote`).
    """
    del step  # the vote is per call; every process calls once per step
    if self._vote is None:
      return self._preempted.is_set()
    return self._vote(self._preempted.is_set())

  def close(self) -> None:
    self.wait_until_finished()
    self._manager.close()
    if self._previous_sigterm_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_sigterm_handler)
      self._previous_sigterm_handler = None


def _os_error(error: BaseException) -> OSError | None:
  """The operating-system error behind a failed checkpoint write, if that is what it is.

  Python file operations raise OSError; TensorStore (the array writer) raises a ValueError whose
  message carries the errno as `os_error_code=N`.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError):
      return error
    match = _OS_ERROR_CODE.search(str(error))
    if match:
      code = int(match.group(1))
      return OSError(code, os.strerror(code))
    error = error.__cause__ or error.__context__
  return None
