"""The model's benchmarks (clipmed.benchmark): train, input, eval, embed and loss."""

import argparse
from collections.abc import Callable
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np

from clipmed import losses
from clipmed.benchmark import profile


def _time_ms(fn: Callable[[], object], repeats: int) -> float:
  """Median wall time of `fn()` in milliseconds (blocking on its outputs), after one warm-up."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append((time.perf_counter() - start) * 1e3)
  return sorted(times)[len(times) // 2]


def _add_loss_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batch", type=int, default=1024, help="global batch size B")
  parser.add_argument("--dim", type=int, default=128, help="embedding width D")
  parser.add_argument("--loss-type", default="softmax", choices=("softmax", "sigmoid"))
  parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")


def run_loss(args: argparse.Namespace) -> dict[str, object]:
  """Memory and time of the full loss, forward and backward, sharded over all devices.

  Hard negatives and all three streams (text, clinical, graph): value_and_grad of
  `sharded_clinic_loss` w.r.t. the five embedding arrays, batch-sharded over a 1-D "data" mesh
  (Auto axes, as clipmed/sharding.py makes them). Bytes are the compiled per-device program's
  temp + output bytes.
  """
  num_devices = jax.device_count()
  if args.batch % num_devices:
    raise SystemExit(f"--batch {args.batch} is not divisible by {num_devices} devices.")
  # Auto axes, like the train step's mesh (clipmed/sharding.py).
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(AxisType.Auto,))
  keys = jax.random.split(jax.random.key(0), 7)
  names = ("image", "text", "graph", "neg_text", "neg_graph")
  emb = {}
  for key, name in zip(keys, names):
    x = jax.random.normal(key, (args.batch, args.dim), jnp.float32)
    emb[name] = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  labels = (jax.random.uniform(keys[5], (args.batch, 14)) > 0.7).astype(jnp.float32)
  neg_labels = (jax.random.uniform(keys[6], (args.batch, 14)) > 0.7).astype(jnp.float32)
  sharding = NamedSharding(mesh, P("data"))
  emb, labels, neg_labels = jax.device_put((emb, labels, neg_labels), sharding)
  spec = losses.LossSpec(thresholds=dict(text=0.5, clinical=0.5, graph=0.5),
                         weights=dict(text=1.0, clinical=1.0, graph=1.0),
                         loss_type=args.loss_type)

  def total(e, c, c_neg):
    outputs = {"image": e["image"], "text": e["text"], "graph": e["graph"],
               "negative": {"text": e["neg_text"], "graph": e["neg_graph"]},
               "logit_scale": jnp.float32(10.0)}
    batch = {"labels": c, "negative": {"labels": c_neg}}
    return losses.sharded_clinic_loss(outputs, batch, spec, mesh=mesh, data_axes=("data",))[0]

  step = jax.jit(jax.value_and_grad(total))
  compiled = step.lower(emb, labels, neg_labels).compile()
  memory = compiled.memory_analysis()
  loss_bytes = int(memory.temp_size_in_bytes + memory.output_size_in_bytes)
  loss_ms = _time_ms(lambda: compiled(emb, labels, neg_labels), args.repeats)
  return {"batch": args.batch, "devices": num_devices, "loss_bytes_per_device": loss_bytes,
          "loss_ms": round(loss_ms, 3), "dim": args.dim, "loss_type": args.loss_type}



def _add_embed_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", default="full", choices=("full", "demo", "tiny"),
                      help="the model of configs/<config>.py (random weights)")
  parser.add_argument("--batch", type=int, default=32, help="images per call (eval_batch_size)")
  parser.add_argument("--repeats", type=int, default=3)


def run_embed(args: argparse.Namespace) -> dict[str, object]:
  """Evaluation cost: image embeddings per second of a config's model (the Embedder's jitted
  encode_image at the config's image size), random weights, after compilation."""
  import importlib  # pylint: disable=g-import-not-at-top
  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top
  from clipmed.models import clip as clip_lib  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f"configs.{args.config}").get_config()
  model = clip_lib.create_model(config.model, vocab_size=30522)
  spec = batch_lib.BatchSpec.from_config(config, num_classes=14)
  params = jax.jit(lambda key: model.init(key, spec.zeros(1), train=False)["params"])(
      jax.random.key(0))
  images = jnp.zeros((args.batch, spec.image_size, spec.image_size, spec.channels), jnp.float32)
  embed = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  ms = _time_ms(lambda: embed(params, images), args.repeats)
  return {"config": args.config, "image_size": spec.image_size, "batch": args.batch,
          "ms_per_batch": round(ms, 1), "images_per_s": round(args.batch / ms * 1e3, 2),
          "seconds_per_1000_images": round(1e3 * ms / args.batch / 1e3, 1)}


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batch", type=int, default=None, help="global batch (default: the "
                      "config's batch_size)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
  parser.add_argument("--init", default="random", choices=("random", "pretrained"),
                      help="random weights, or the config's pretrained ones (may download)")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the device's datasheet peak TFLOP/s (default: measure a matmul)")
  parser.add_argument("--profile", default=None, metavar="DIR",
                      help="trace one more step with jax.profiler into DIR and attribute its "
                      "time to the model's modules (the JSON line gains 'profile')")


def _random_batch(spec: Any, batch_size: int, vocab_size: int, seed: int) -> dict[str, Any]:
  """A batch of `spec` with random pixels, token ids and labels; attention masks all ones and
  graphs empty (static shapes: the step does the same work on any content)."""
  rng = np.random.default_rng(seed)
  batch = spec.zeros(batch_size)
  batch["image"] = rng.standard_normal(batch["image"].shape, np.float32)
  reports = [batch] + ([batch["negative"]] if spec.negatives else [])
  for report in reports:
    report["input_ids"] = rng.integers(0, vocab_size, report["input_ids"].shape, np.int32)
    report["labels"] = (rng.random(report["labels"].shape) > 0.7).astype(np.float32)
  return batch


def _median_and_spread(times_ms: list[float]) -> dict[str, float]:
  ordered = sorted(times_ms)
  return {"median": round(ordered[len(ordered) // 2], 1), "min": round(ordered[0], 1),
          "max": round(ordered[-1], 1)}


def run_train(args: argparse.Namespace) -> dict[str, object]:
  """Step time, throughput and MFU of the config's real train step (see the module docstring).

  model_flops_per_step is XLA's cost analysis of the compiled step (all devices; with
  grad_accum_steps > 1 it counts the second forward pass too); peak_flops is --peak_tflops x
  devices, or a float32 matmul measured on all devices in this process.
  """
  from clipmed import preflight, step_builder  # pylint: disable=g-import-not-at-top
  from clipmed import state as state_lib  # pylint: disable=g-import-not-at-top
  from clipmed.models import pretrained  # pylint: disable=g-import-not-at-top

  config = args.config_dict
  batch_size = int(args.batch or config.batch_size)
  with config.unlocked():
    config.batch_size = batch_size
  vocab_size, num_classes, note = preflight.shape_facts(config)
  parts = step_builder.build_step_parts(config, vocab_size=vocab_size, num_classes=num_classes)
  start = time.perf_counter()
  compiled = parts.compile_train_step(batch_size)
  compile_s = time.perf_counter() - start
  cost = preflight.step_cost(parts, compiled, batch_size)
  load = None
  if args.init == "pretrained":
    load = lambda p: pretrained.init_clip_params(p, model_config=config.model)  # noqa: E731
  state, _ = state_lib.create_sharded_state(parts.init_params, parts.tx, jax.random.key(0),
                                            parts.mesh, parts.rules, params_transform=load)
  batch = jax.device_put(_random_batch(parts.batch_spec, batch_size, vocab_size, 0),
                         parts.batch_sharding)
  rng = jax.random.key(1)
  times = []
  for i in range(args.steps + 2):
    start = time.perf_counter()
    state, _, info = jax.block_until_ready(compiled(state, batch, rng))
    if i >= 2:
      times.append((time.perf_counter() - start) * 1e3)
  if not bool(info["finite"]):
    raise RuntimeError("the benchmarked step was not finite")
  profiled = None
  if args.profile:
    profiled = profile.profile_step(lambda: compiled(state, batch, rng), compiled.as_text(),
                                    args.profile)
    print(profile.format_table(profiled), file=sys.stderr, flush=True)
  if args.peak_tflops:
    peak, source = args.peak_tflops * 1e12 * cost.devices, "--peak_tflops x devices"
  else:
    peak, source = preflight.measure_peak_flops(), "float32 matmul measured on all devices"
  step = _median_and_spread(times)
  result = {
      "benchmark": "train", "row": _row_name(config), "batch": batch_size,
      "devices": cost.devices, "platform": jax.devices()[0].platform,
      "dtype": str(np.dtype(_compute_dtype(config))), "remat": config.model.remat,
      "grad_accum_steps": int(config.grad_accum_steps), "step_ms": step,
      "samples_per_s": round(batch_size / step["median"] * 1e3, 3),
      "model_flops_per_step": cost.flops, "peak_flops": peak, "peak_flops_source": source,
      "mfu": round(cost.flops / (step["median"] / 1e3) / peak, 4),
      "compile_s": round(compile_s, 1), "peak_memory_bytes": cost.needed_bytes}
  if note:
    result["note"] = note
  if profiled is not None:
    result["profile"] = profiled
  return result


def _compute_dtype(config):
  from clipmed.models import clip as clip_lib  # pylint: disable=g-import-not-at-top
  return clip_lib.compute_dtype(config.model)


def _row_name(config) -> str:
  """The configs/common.py ROWS entry the config's loss and graph settings match, else 'custom'."""
  from configs import common  # pylint: disable=g-import-not-at-top
  for name in common.ROWS:
    probe = common.base_config()
    common.apply_row(probe, name)
    if (probe.loss.to_dict() == config.loss.to_dict()
        and probe.model.graph.enabled == config.model.graph.enabled):
      return name
  return "custom"


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batches", type=int, default=20, help="timed batches (after 2)")


def run_input(args: argparse.Namespace) -> dict[str, object]:
  """Throughput of the config's Grain training pipeline with every extra it needs (hard
  negatives, graphs), on this process's data (SynthCXR is generated on first use)."""
  import input_pipeline  # pylint: disable=g-import-not-at-top
  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top

  config = args.config_dict
  dataset = input_pipeline.open_dataset(config.data)
  spec = batch_lib.BatchSpec.from_config(config, num_classes=len(dataset.class_names))
  iterator = input_pipeline.create_train_iterator(
      config.data, source=dataset.source("train"), tokenizer=dataset.tokenizer, spec=spec,
      class_names=dataset.class_names, global_batch_size=int(config.batch_size), seed=0)
  for _ in range(2):
    next(iterator)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(args.batches):
    next(iterator)
  seconds = time.perf_counter() - start
  return {"benchmark": "input", "dataset": config.data.name, "batch": int(config.batch_size),
          "negatives": spec.negatives, "graphs": spec.graph is not None,
          "worker_count": int(config.data.worker_count), "batches": args.batches,
          "samples_per_s": round(args.batches * int(config.batch_size) / seconds, 2),
          "cpu_s_per_batch": round((time.process_time() - cpu_start) / args.batches, 4)}


def _add_eval_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--batch", type=int, default=None,
                      help="rows per call (default: the config's eval_batch_size)")
  parser.add_argument("--repeats", type=int, default=3)


def run_eval(args: argparse.Namespace) -> dict[str, object]:
  """Evaluation cost of the config's model: image and report embeddings per second (the jitted
  encoders evaluation uses), random weights, after compilation."""
  from clipmed import preflight  # pylint: disable=g-import-not-at-top
  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top
  from clipmed.models import clip as clip_lib  # pylint: disable=g-import-not-at-top

  config = args.config_dict
  batch_size = int(args.batch or config.eval_batch_size)
  vocab_size, num_classes, _ = preflight.shape_facts(config)
  model = clip_lib.create_model(config.model, vocab_size=vocab_size)
  spec = batch_lib.BatchSpec.from_config(config, num_classes=num_classes)
  params = jax.jit(lambda key: model.init(key, spec.zeros(1), train=False)["params"])(
      jax.random.key(0))
  batch = _random_batch(spec, batch_size, vocab_size, 0)
  images = jnp.asarray(batch["image"])
  ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
  encode_image = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  encode_text = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m,
                                                    method=model.encode_text))
  image_ms = _time_ms(lambda: encode_image(params, images), args.repeats)
  text_ms = _time_ms(lambda: encode_text(params, ids, mask), args.repeats)
  return {"benchmark": "eval", "batch": batch_size, "devices": jax.device_count(),
          "images_per_s": round(batch_size / image_ms * 1e3, 2),
          "reports_per_s": round(batch_size / text_ms * 1e3, 2)}
