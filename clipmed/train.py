"""train_and_evaluate(config, workdir): the wiring and the training loop."""

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

import input_pipeline
from clipmed.errors import UserError
from clipmed import checkpointing, evaluators, losses, sharding, state as state_lib, train_step
from clipmed.models import clip as clip_lib, pretrained


class ConfigError(UserError, ValueError):
  """A config value that cannot work; the message says which field and what to set."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the values that would otherwise fail deep inside a library."""
  if config.batch_size <= 0:
    raise ConfigError(f"config.batch_size={config.batch_size} must be positive")
  if config.num_train_steps <= 0:
    raise ConfigError(f"config.num_train_steps={config.num_train_steps} must be positive")
  num_data = jax.process_count()
  if config.batch_size % num_data:
    raise ConfigError(f"config.batch_size={config.batch_size} must be divisible by the "
                      f"{num_data} processes")
  for name, block in config.evals.items():
    if block.task not in evaluators.EVALUATORS:
      raise ConfigError(f"config.evals.{name}.task={block.task!r} is not one of "
                        f"{sorted(evaluators.EVALUATORS)}")
  unknown = set(config.loss.weights) - {"text", "clinical", "graph"}
  if unknown:
    raise ConfigError(f"config.loss.weights has unknown streams {sorted(unknown)}")


def make_loss_fn(loss_config: ml_collections.ConfigDict, mesh, data_axes):
  """(model outputs, batch) -> (loss, terms), sharded over the batch axes of `mesh`."""
  thresholds = {k: float(v) for k, v in loss_config.thresholds.items()}
  weights = {k: float(v) for k, v in loss_config.weights.items()}

  logit_bias = None if loss_config.logit_bias is None else float(loss_config.logit_bias)
  softclip = loss_config.soft_labels == "softclip"
  temperature = float(loss_config.softclip_temperature) if softclip else None

  def loss_fn(outputs, batch):
    return losses.sharded_clinic_loss(
        outputs["image"], outputs["text"], batch["labels"], outputs["logit_scale"], mesh=mesh,
        data_axes=data_axes, graph=outputs.get("graph"), neg_text=outputs.get("neg_text"),
        neg_graph=outputs.get("neg_graph"), neg_labels=batch.get("neg_labels"),
        thresholds=thresholds, weights=weights, mask_own_negative=loss_config.mask_own_negative,
        loss_type=loss_config.loss_type, logit_bias=logit_bias,
        soft_labels=loss_config.soft_labels, softclip_temperature=temperature)
  return loss_fn


def pipeline_extras(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What the batches must carry beyond image + report: hard negatives, padded report graphs."""
  graphs = None
  if config.model.graph.enabled:
    graphs = {k: int(config.model.graph[k]) for k in ("max_nodes", "max_edges", "max_node_tokens")}
  return dict(with_negatives=bool(config.loss.hard_negatives), graphs=graphs)


@dataclasses.dataclass
class Setup:
  """What training and evaluation share: mesh, data, model, optimiser, abstract state."""
  mesh: Any
  data_axes: tuple[str, ...]
  batch_sharding: Any
  dataset: input_pipeline.Dataset
  model: Any
  schedule: Any
  state: state_lib.TrainState  # freshly initialised (or restored later)
  state_shardings: Any
  data_seed: int
  train_rng: jax.Array


def setup(config: ml_collections.ConfigDict) -> Setup:
  """Builds the mesh, prepares the data, and creates the sharded initial state."""
  validate_config(config)
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  logging.info("Mesh %s over %d devices (%d processes).", dict(mesh.shape), jax.device_count(),
               jax.process_count())

  root = jax.random.key(config.seed)
  init_rng, data_rng, train_rng = jax.random.split(root, 3)
  data_seed = int(jax.random.randint(data_rng, (), 0, np.iinfo(np.int32).max))

  pretrained.check_pretrained_available(config.model)  # fail before preparing data or compiling
  dataset = input_pipeline.prepare_dataset(config.data)
  model = clip_lib.create_model(config.model, vocab_size=len(dataset.tokenizer))
  schedule = state_lib.learning_rate_schedule(config.optimizer, config.num_train_steps)
  tx = state_lib.create_optimizer(config.optimizer, schedule)
  dummy = input_pipeline.dummy_batch(config.data, batch_size=1, **pipeline_extras(config))

  def init_params(key):
    return model.init({"params": key, "dropout": key},
                      **train_step.model_inputs(dummy), train=False)["params"]

  load_pretrained = None
  if config.model.image.init or config.model.text.init:
    load_pretrained = functools.partial(pretrained.init_clip_params, model_config=config.model)
  state, state_shardings = state_lib.create_sharded_state(
      init_params, tx, init_rng, mesh, rules, params_transform=load_pretrained)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
  logging.info("Model has %.2fM parameters.", num_params / 1e6)
  return Setup(mesh=mesh, data_axes=sharding.data_axes(config.mesh),
               batch_sharding=sharding.batch_sharding(mesh, config.mesh), dataset=dataset,
               model=model, schedule=schedule, state=state, state_shardings=state_shardings,
               data_seed=data_seed, train_rng=train_rng)


def make_runner(config: ml_collections.ConfigDict, dataset) -> evaluators.Runner:
  return evaluators.Runner(
      config.evals, dataset=config.data.name, seed=config.eval_seed,
      iterate_split=functools.partial(dataset.iterate_split, batch_size=config.eval_batch_size),
      split_metadata=dataset.split_metadata)


def _checkpointer(config, workdir: str, **kwargs) -> checkpointing.Checkpointer:
  return checkpointing.Checkpointer(
      os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints,
      save_every_steps=config.checkpoint_every_steps, async_save=config.async_checkpointing,
      **kwargs)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (resuming from the latest checkpoint in `workdir`), then evaluates.

  Returns:
    The final evaluation results {"<task>/<dataset>/<metric>": Metric}, or {} when training
    stopped early on a preemption signal.
  """
  checkpointing.prepare_workdir(workdir)  # before data preparation and compilation
  ckpt = _checkpointer(config, workdir)
  ckpt.install_preemption_handler()
  is_main = jax.process_index() == 0
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  s = setup(config)
  mesh, state, state_shardings = s.mesh, s.state, s.state_shardings
  writer.write_hparams(_flat_hparams(config))

  train_iter = input_pipeline.create_train_iterator(
      config.data, source=s.dataset.source("train"), tokenizer=s.dataset.tokenizer,
      global_batch_size=config.batch_size, seed=s.data_seed, **pipeline_extras(config))
  restored = ckpt.restore_latest(state, train_iter)
  if restored is not None:
    step, state = restored
    logging.info("Resumed from the checkpoint at step %d in %s.", step, ckpt.directory)
  initial_step = int(state.step)

  loss_fn = make_loss_fn(config.loss, mesh, s.data_axes)
  p_train_step = jax.jit(
      functools.partial(train_step.train_step, model=s.model, loss_fn=loss_fn,
                        schedule=s.schedule),
      in_shardings=(state_shardings, s.batch_sharding, None),
      out_shardings=(state_shardings, None, None),
      donate_argnums=(0,))
  runner = make_runner(config, s.dataset)
  embedder = Embedder(s.model, s.dataset.tokenizer, config)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.num_train_steps, writer=writer, every_steps=config.log_every_steps)
  train_rng, data_axes = s.train_rng, s.data_axes

  logging.info("Training from step %d to %d.", initial_step, config.num_train_steps)
  train_metrics = None
  last_step = config.num_train_steps
  with mesh:
    for step in range(initial_step + 1, last_step + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = input_pipeline.make_global(next(train_iter), mesh, data_axes)
        state, metrics, _ = p_train_step(state, batch, train_rng)
      train_metrics = metrics if train_metrics is None else train_metrics.merge(metrics)
      report_progress(step)
      if step % config.log_every_steps == 0 or step == last_step:
        scalars = {f"train/{k}": v for k, v in train_metrics.compute().items()}
        writer.write_scalars(step, scalars)
        train_metrics = None
      preempted = ckpt.reached_preemption(step)
      if ckpt.should_save(step, last_step) or preempted:
        with report_progress.timed("checkpoint"):
          ckpt.save(step, state, train_iter, force=preempted)
      if preempted:
        ckpt.wait_until_finished()
        logging.warning("Stopped at step %d after a preemption signal; rerun the same command "
                        "to resume.", step)
        writer.flush()
        ckpt.close()
        return {}
      if runner.due(step) and step != last_step:
        with report_progress.timed("eval"):
          results = runner.run(step, **embedder.bind(state.params), only_due=True)
          writer.write_scalars(step, runner.scalars(results))

    ckpt.wait_until_finished()
    logging.info("Evaluating the final model (step %d).", int(state.step))
    results = runner.run(int(state.step), **embedder.bind(state.params), only_due=False)
  writer.write_scalars(int(state.step), runner.scalars(results))
  if is_main:
    runner.write(workdir, results, int(state.step))
  writer.flush()
  ckpt.close()
  return results


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | None = None) -> dict[str, Any]:
  """Evaluates the checkpoint at `step` (latest complete by default) with every config.evals task.

  Writes DIR/results.json, DIR/results.md and TensorBoard scalars, like the end of training.
  """
  s = setup(config)
  ckpt = _checkpointer(config, workdir, save_data_iterator=False, read_only=True)
  step, state = ckpt.restore_state(s.state, step)
  logging.info("Evaluating the checkpoint at step %d in %s.", step, ckpt.directory)
  runner = make_runner(config, s.dataset)
  embedder = Embedder(s.model, s.dataset.tokenizer, config)
  with s.mesh:
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


class Embedder:
  """Jitted image and text embedding for the evaluators, with host-side batching of texts."""

  def __init__(self, model, tokenizer, config):
    self._tokenizer = tokenizer
    self._config = config
    self._images = jax.jit(functools.partial(train_step.embed_images, model=model))
    self._texts = jax.jit(functools.partial(train_step.embed_texts, model=model))
    self._scale = jax.jit(lambda params: model.apply({"params": params},
                                                     method=model.logit_scale))

  def bind(self, params):
    """Returns the callables the evaluator runner takes, for these parameters."""
    return dict(
        embed_images=lambda images: np.asarray(self._images(params, jnp.asarray(images))),
        embed_texts=functools.partial(self._embed_texts, params),
        logit_scale=float(self._scale(params)))

  def _embed_texts(self, params, texts):
    batch = self._config.eval_batch_size
    out = []
    for start in range(0, len(texts), batch):
      chunk = list(texts[start:start + batch])
      n = len(chunk)
      chunk += [""] * (batch - n)  # static shapes: one compilation
      tokens = self._tokenizer(chunk, padding="max_length", truncation=True,
                               max_length=self._config.data.max_text_length, return_tensors="np")
      emb = self._texts(params, jnp.asarray(tokens["input_ids"], jnp.int32),
                        jnp.asarray(tokens["attention_mask"], jnp.int32))
      out.append(np.asarray(emb)[:n])
    return np.concatenate(out, axis=0) if out else np.zeros((0, self._config.model.embed_dim))
