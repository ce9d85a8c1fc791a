"""train_and_evaluate(config, workdir): the wiring and the training loop."""

import contextlib
import copy
import dataclasses
import functools
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

import flax.linen as nn

import input_pipeline
from clipmed import checkpointing, errors, evaluators, losses, preflight, progress, sharding
from clipmed import state as state_lib, step_builder, summaries, train_step
from clipmed.errors import ConfigError, NonFiniteError
from clipmed.evaluators.embedder import Embedder
from clipmed.models import clip as clip_lib, pretrained


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every config value that would otherwise fail later (after data preparation or
  compilation), raising a ConfigError that names the field. Runs before any work starts."""
  for key in ("batch_size", "num_train_steps", "log_every_steps", "eval_batch_size",
              "keep_checkpoints", "max_consecutive_nonfinite_steps"):
    if int(config[key]) <= 0:
      raise ConfigError(f"config.{key}={config[key]} must be positive")
  if int(config.checkpoint_every_steps) < 0:
    raise ConfigError(f"config.checkpoint_every_steps={config.checkpoint_every_steps} must be "
                      ">= 0 (0: only at the end)")
  for key in ("batch_size", "eval_batch_size"):  # each process takes an equal share of a batch
    if config[key] % jax.process_count():
      raise ConfigError(f"config.{key}={config[key]} must be divisible by the "
                        f"{jax.process_count()} processes")
  if config.data.name not in input_pipeline.DATASETS:
    raise ConfigError(f"config.data.name={config.data.name!r} is not a known dataset; choose "
                      f"one of {sorted(input_pipeline.DATASETS)}")
  if config.data.views not in input_pipeline.VIEWS:
    raise ConfigError(f"config.data.views={config.data.views!r}; choose one of "
                      f"{input_pipeline.VIEWS}")
  input_pipeline.check_data_config(config.data)
  input_pipeline.datasets.check_mixture(config.data)
  losses.LossSpec.from_config(config.loss, graph_enabled=config.model.graph.enabled)
  clip_lib.check_model_config(config.model, max_text_length=int(config.data.max_text_length))
  state_lib.check_optimizer_config(config.optimizer, config.num_train_steps)
  sharding.logical_rules(config.mesh)
  evaluators.check_evals_config(config.evals)
  train_step.check_grad_accum_steps(config.grad_accum_steps, int(config.batch_size),
                                    sharding.data_parallel_size(config.mesh))
  if float(config.preflight.device_memory_gb) < 0:
    raise ConfigError(f"config.preflight.device_memory_gb={config.preflight.device_memory_gb} "
                      "must be >= 0 (0: the device's own memory)")
  summaries.check_config(config.eval_summaries)


@dataclasses.dataclass
class Setup(step_builder.StepParts):
  """What training and evaluation share: the step's parts (mesh, model, loss, optimiser, state
  shardings; clipmed/step_builder.py), the data and the initial state."""
  dataset: input_pipeline.Dataset
  state: state_lib.TrainState  # freshly initialised (or restored later)
  data_seed: int
  train_rng: jax.Array


def setup(config: ml_collections.ConfigDict, workdir: str | None = None, *,
          training: bool = True) -> Setup:
  """Builds the mesh, prepares the data, and creates the sharded initial state.

  With a workdir, the run's tokenizer is checked against the data's (saved there first when
  training; see checkpointing.check_run_tokenizer). For evaluation (training=False) the
  pretrained weights of config.model.*.init are neither needed nor loaded.
  """
  validate_config(config)

  root = jax.random.key(config.seed)
  init_rng, data_rng, train_rng = jax.random.split(root, 3)
  data_seed = int(jax.random.randint(data_rng, (), 0, np.iinfo(np.int32).max))

  if training:  # evaluation restores every weight from the checkpoint
    pretrained.check_pretrained_available(config.model)  # fail before data or compilation
  dataset = input_pipeline.open_dataset(config.data)
  if not dataset.has_reports:
    raise ConfigError(f"config.data.name={config.data.name!r} has no reports to train on; train "
                      "on a report dataset and evaluate on it with config.evals.<name>.dataset")
  if workdir is not None:
    checkpointing.check_run_tokenizer(
        workdir, dataset.tokenizer, input_pipeline.tokenizer_fingerprint(dataset.tokenizer),
        save=training and jax.process_index() == 0)
  parts = step_builder.build_step_parts(config, vocab_size=len(dataset.tokenizer),
                                        num_classes=len(dataset.class_names), init_rng=init_rng)
  load_pretrained = None
  if training and pretrained.wants_init(config.model):
    load_pretrained = functools.partial(pretrained.init_clip_params, model_config=config.model)
  state, state_shardings = state_lib.create_sharded_state(
      parts.init_params, parts.tx, init_rng, parts.mesh, parts.rules,
      params_transform=load_pretrained)
  processes = jax.process_count()
  _tell(f"Model: {step_builder.num_parameters(parts) / 1e6:.2f}M parameters; mesh "
        f"{dict(parts.mesh.shape)} over {jax.device_count()} devices ({processes} "
        f"process{'es' if processes > 1 else ''}).")
  return Setup(**{f.name: getattr(parts, f.name) for f in dataclasses.fields(parts)},
               dataset=dataset, state=state, data_seed=data_seed, train_rng=train_rng)


def make_runner(config: ml_collections.ConfigDict, s: Setup) -> evaluators.Runner:
  """The evaluation runner; datasets other than the training one are opened with config.data's
  settings (data_dir, prepared) and the run's tokenizer. Each process reads and embeds its
  block of every evaluated split; the blocks are gathered into every process's whole split."""

  def source(name: str) -> evaluators.EvalSource:
    dataset = s.dataset
    if name != config.data.name:
      data_config = copy.deepcopy(config.data)
      data_config.name = name
      dataset = input_pipeline.open_dataset(data_config, tokenizer=s.dataset.tokenizer)
    spec = dataclasses.replace(s.batch_spec, negatives=False, graph=None, text=False,
                               num_classes=len(dataset.class_names))
    return evaluators.EvalSource(
        iterate_split=functools.partial(dataset.iterate_split, spec=spec,
                                        batch_size=config.eval_batch_size,
                                        process_index=jax.process_index(),
                                        process_count=jax.process_count()),
        gather_rows=input_pipeline.gather_rows,
        split_metadata=dataset.split_metadata, class_names=dataset.class_names,
        has_reports=dataset.has_reports, split_info=dataset.split_info)

  return evaluators.Runner(config.evals, default_dataset=config.data.name, seed=config.eval_seed,
                           sources=source)


def make_embedder(config: ml_collections.ConfigDict, s: Setup) -> Embedder:
  """The evaluation's encoders, their rows sharded over the mesh like a training batch."""
  return Embedder(s.model, s.dataset.tokenizer, eval_batch_size=config.eval_batch_size,
                  max_text_length=config.data.max_text_length, batch_sharding=s.batch_sharding)


def _checkpointer(config, workdir: str, **kwargs) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints,
      save_every_steps=config.checkpoint_every_steps, async_save=config.async_checkpointing,
      **kwargs)


class _NonFiniteWatch:
  """Counts consecutive skipped (non-finite) steps, reading each step's flag one step late so the
  host never waits for the device inside the loop."""

  def __init__(self, limit: int):
    self.limit = int(limit)
    self.consecutive = 0
    self._pending = None  # (step, finite flag, terms) of the last dispatched step

  def push(self, step: int, info: dict[str, Any]) -> tuple[int, dict[str, float]] | None:
    """Records step `step`; returns (step, terms) of a step that hit the limit, else None."""
    previous, self._pending = self._pending, (step, info["finite"], info["terms"])
    return None if previous is None else self._check(*previous)

  def flush(self) -> tuple[int, dict[str, float]] | None:
    previous, self._pending = self._pending, None
    return None if previous is None else self._check(*previous)

  def _check(self, step, finite, terms):
    if bool(finite):
      self.consecutive = 0
      return None
    self.consecutive += 1
    logging.warning("Step %d skipped: the loss or its gradients are not finite.", step)
    if self.consecutive < self.limit:
      return None
    return step, {k: float(v) for k, v in terms.items()}


def _nonfinite_error(step: int, terms: dict[str, float], limit: int,
                     ckpt: checkpointing.Checkpointer) -> NonFiniteError:
  bad = sorted(k for k, v in terms.items() if not np.isfinite(v)) or ["none (the gradients)"]
  steps = ckpt.all_steps()
  last = (f"the last good checkpoint is step {steps[-1]} in {ckpt.directory}" if steps
          else "there is no checkpoint yet")
  return NonFiniteError(
      f"training stopped at step {step}: {limit} consecutive steps had a non-finite loss or "
      f"gradient (non-finite loss terms: {', '.join(bad)}); {last}. Lower "
      "config.optimizer.learning_rate or check the data, then rerun to resume from it.")


@jax.jit
def _add_terms(total, terms, finite):
  """Running sums of the loss terms over finite steps (one dispatch per step)."""
  return jax.tree.map(lambda t, x: t + jnp.where(finite, x, 0.0), total, terms)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from the latest checkpoint in `workdir`), then evaluates.

  TensorBoard gets, every config.log_every_steps: train/loss, train/learning_rate,
  train/logit_scale, train/grad_norm, train/skipped_steps (steps skipped since the last log line)
  and train/loss_terms/<PAIR>/<stream> (each weighted loss term, averaged like the total).

  Returns:
    The final evaluation results {"<task>/<dataset>/<metric>": Metric}, or {} when training
    stopped early on a preemption signal.
  """
  checkpointing.prepare_workdir(workdir)  # before data preparation and compilation
  ckpt = _checkpointer(config, workdir)
  ckpt.install_preemption_handler()
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  s = setup(config, workdir)
  mesh, state = s.mesh, s.state
  writer.write_hparams(_flat_hparams(config))
  if is_main:
    checkpointing.save_run_config(workdir, config)  # clipmed.predict / export rebuild from it

  mixture = input_pipeline.datasets.mixture_sources(config.data, s.dataset)
  train_iter = input_pipeline.create_train_iterator(
      config.data, source=None if mixture else s.dataset.source("train"),
      tokenizer=s.dataset.tokenizer, spec=s.batch_spec, class_names=s.dataset.class_names,
      global_batch_size=config.batch_size, seed=s.data_seed, mixture=mixture)
  restored = ckpt.restore_latest(state, train_iter)
  if restored is not None:
    step, state = restored
    _tell(f"Resumed from the checkpoint at step {step} in {ckpt.directory}.")
  initial_step = int(state.step)

  p_train_step, compiled_cost = _compile_and_check(config, s)
  runner = make_runner(config, s)
  embedder = make_embedder(config, s)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.num_train_steps, writer=writer, every_steps=config.log_every_steps)
  watch = _NonFiniteWatch(config.max_consecutive_nonfinite_steps)
  train_rng, data_axes = s.train_rng, s.data_axes

  train_metrics, term_sums = None, None
  last_step = config.num_train_steps
  bar = progress.Progress(last_step, "train", "steps", initial=initial_step,
                          every=config.log_every_steps, enabled=is_main)
  if initial_step < last_step:
    bar.write(f"Training steps {initial_step + 1}-{last_step}.")
  checkpointing.wait_for_all_processes("compiled")  # see its docstring
  with mesh, nn.logical_axis_rules(s.rules), bar:
    for step in range(initial_step + 1, last_step + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = input_pipeline.make_global(next(train_iter), mesh, data_axes)
        # A device out of memory shows when a step runs or when its results are read. Read them
        # on the first step (where it happens: the step's memory does not change afterwards) and
        # before each save (below), so that it is reported here and not from inside Orbax's
        # save; the other steps stay asynchronous.
        with _out_of_memory_reported(config, s, compiled_cost, step, ckpt):
          state, metrics, info = p_train_step(state, batch, train_rng)
          if step == initial_step + 1:
            jax.block_until_ready(state)
      train_metrics = metrics if train_metrics is None else train_metrics.merge(metrics)
      if term_sums is None:
        term_sums = jax.tree.map(jnp.zeros_like, info["terms"])
      term_sums = _add_terms(term_sums, info["terms"], info["finite"])
      diverged = watch.push(step, info)
      if diverged is None and step == last_step:
        diverged = watch.flush()
      if diverged is not None:
        writer.flush()
        ckpt.wait_until_finished()  # so the last save is listed
        error = _nonfinite_error(*diverged, config.max_consecutive_nonfinite_steps, ckpt)
        ckpt.close()
        raise error
      report_progress(step)
      if step % config.log_every_steps == 0 or step == last_step:
        scalars = _train_scalars(train_metrics, term_sums)
        writer.write_scalars(step, scalars)
        bar.set_postfix(loss=scalars["train/loss"], lr=scalars["train/learning_rate"])
        train_metrics, term_sums = None, None
      bar.update()
      preempted = ckpt.reached_preemption(step)
      if ckpt.should_save(step, last_step) or preempted:
        with _out_of_memory_reported(config, s, compiled_cost, step, ckpt):
          jax.block_until_ready(state)
        with report_progress.timed("checkpoint"):
          ckpt.save(step, state, train_iter, force=preempted)
        if step != last_step:
          bar.write(f"step {step}: checkpoint -> {ckpt.directory}")
      if preempted:
        ckpt.wait_until_finished()
        logging.warning("Stopped at step %d after a preemption signal; rerun the same command "
                        "to resume.", step)
        writer.flush()
        ckpt.close()
        return {}
      if runner.due(step) and step != last_step:
        with report_progress.timed("eval"):
          results = _timed_eval(bar, step, lambda: runner.run(
              step, **embedder.bind(state.params), only_due=True))
          writer.write_scalars(step, runner.scalars(results))
          summaries.write_eval_summaries(writer, step, config=config, dataset=s.dataset,
                                         model=s.model, embedder=embedder, params=state.params,
                                         results=results)

    ckpt.wait_until_finished()
    bar.close()
    results = _timed_eval(bar, int(state.step), lambda: runner.run(
        int(state.step), **embedder.bind(state.params), only_due=False))
    summaries.write_eval_summaries(writer, int(state.step), config=config, dataset=s.dataset,
                                   model=s.model, embedder=embedder, params=state.params,
                                   results=results)
  writer.write_scalars(int(state.step), runner.scalars(results))
  if is_main:
    runner.write(workdir, results, int(state.step))
  writer.flush()
  ckpt.close()
  return results


def _tell(message: str) -> None:
  """A status line on process 0's console; an INFO log line on the other processes."""
  if jax.process_index() == 0:
    progress.say(message)
  else:
    logging.info(message)


def _timed_eval(bar: progress.Progress, step: int, run) -> dict[str, Any]:
  """Runs an evaluation with a status line before and after it (above the training bar)."""
  bar.write(f"step {step}: evaluating ...")
  start = time.perf_counter()
  results = run()
  bar.write(f"step {step}: evaluated {len(results)} metrics in "
            f"{time.perf_counter() - start:.0f} s")
  return results


def _compile_and_check(config: ml_collections.ConfigDict,
                       s: Setup) -> tuple[Any, preflight.StepCost]:
  """The train step compiled for config.batch_size and its cost, after the memory preflight (see
  clipmed/preflight.py), which raises ResourceError with advice when it cannot fit."""
  start = time.perf_counter()
  compiled = s.compile_train_step(int(config.batch_size))
  cost = preflight.step_cost(s, compiled, int(config.batch_size))
  logging.info("Train step: %s.", cost.line())
  verdict = "memory preflight skipped (config.preflight.enabled=False)"
  if config.preflight.enabled:
    verdict = preflight.check(config, cost, _cost_fn(s))
  _tell(f"Compiled the train step in {time.perf_counter() - start:.0f} s; {verdict}.")
  return compiled, cost


def _cost_fn(s: Setup) -> preflight.CostFn:
  return preflight.make_cost_fn(vocab_size=len(s.dataset.tokenizer),
                                num_classes=len(s.dataset.class_names))


@contextlib.contextmanager
def _out_of_memory_reported(config, s: Setup, cost: preflight.StepCost, step: int,
                            ckpt: checkpointing.Checkpointer) -> Iterator[None]:
  """Turns XLA's RESOURCE_EXHAUSTED inside the block into the one-line ResourceError."""
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    raise _out_of_memory(config, s, cost, step, ckpt, e) from None


def _out_of_memory(config, s: Setup, cost: preflight.StepCost, step: int,
                   ckpt: checkpointing.Checkpointer, error: Exception) -> errors.ResourceError:
  """The one-line report of a step that ran out of device memory; nothing more is saved."""
  ckpt.close()  # the checkpoints on disk stay as they were
  steps = ckpt.all_steps()
  last = f"the last checkpoint is step {steps[-1]}" if steps else "there is no checkpoint yet"
  detail = str(error).splitlines()[0][:200]
  budget, _ = preflight.device_memory(config.preflight)
  if cost.needed_bytes > budget:  # the preflight's advice (it was skipped)
    fixes = "; ".join(preflight.advice(config, cost, budget, _cost_fn(s)))
  else:
    fixes = (f"XLA's estimate ({preflight.size(cost.needed_bytes)} per device) fits the "
             f"device's {preflight.size(budget)}, so the memory went elsewhere (another "
             "process on the device?); lower batch_size or raise grad_accum_steps")
  return errors.ResourceError(
      f"out of device memory at step {step} (batch_size {config.batch_size}): {detail}. "
      f"{last} in {ckpt.directory}, untouched. Options: {fixes}")


def _train_scalars(train_metrics: train_step.TrainMetrics,
                   term_sums: dict[str, jax.Array]) -> dict[str, float]:
  """The TensorBoard scalars of one log interval (see train_and_evaluate)."""
  values = train_metrics.compute()
  finite_steps = int(train_metrics.loss.count)
  scalars = {f"train/{k}": float(v) for k, v in values.items() if k != "skipped_steps"}
  scalars["train/skipped_steps"] = float(train_metrics.skipped_steps.total)
  for name, total in term_sums.items():
    scalars[f"train/loss_terms/{name}"] = float(total) / max(finite_steps, 1)
  return scalars


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | None = None) -> dict[str, Any]:
  """Evaluates the checkpoint at `step` (latest complete by default) with every config.evals task.

  Writes DIR/results.json, DIR/results.md and TensorBoard scalars, like the end of training.
  """
  s = setup(config, workdir, training=False)
  ckpt = _checkpointer(config, workdir, save_data_iterator=False, read_only=True)
  step, state = ckpt.restore_state(s.state, step)
  _tell(f"Evaluating the checkpoint at step {step} in {ckpt.directory}.")
  runner = make_runner(config, s)
  embedder = make_embedder(config, s)
  with s.mesh, nn.logical_axis_rules(s.rules):
    results = runner.run(step, **embedder.bind(state.params), only_due=False)
  ckpt.close()
  if jax.process_index() == 0:
    writer = metric_writers.create_default_writer(workdir)
    writer.write_scalars(step, runner.scalars(results))
    writer.flush()
    runner.write(workdir, results, step)
  return results


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Scalar config values as flat 'a.b.c' keys, for TensorBoard's HParams tab."""
  out = {}

  def visit(prefix, node):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, ml_collections.ConfigDict):
        visit(name + ".", value)
      elif isinstance(value, (int, float, str, bool)):
        out[name] = value
  visit("", config)
  return out
