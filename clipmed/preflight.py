"""Will it fit? The compiled train step's memory per device against the device's, with advice.

Training calls `check` after compiling the step and before the first step; `python -m
clipmed.main --dry_run` calls `dry_run`, which compiles the same step from shapes only (no data,
no weights; clipmed/step_builder.py) and prints its cost. Both refuse a step that cannot fit with
one line: the bytes needed and available per device and the changes that would fit, each computed
by compiling the changed step (not guessed): the largest batch_size (interpolated between two
compiles), gradient accumulation, bf16 compute, rematerialisation.

Figures come from XLA's compiled memory analysis of this backend: on a CPU host they estimate, not
measure, what a GPU or TPU program of the same shapes needs (XLA:CPU schedules differently and, for
one, does not show what remat saves; see README, "Will it fit?").
"""

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import input_pipeline
from clipmed import errors, step_builder
from clipmed.models import clip as clip_lib
from clipmed.report import chexpert

GB = 1e9


def size(num_bytes: float) -> str:
  """Bytes as text in decimal units ("3.2 MB", "12.41 GB")."""
  for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
    if abs(num_bytes) >= scale:
      return f"{num_bytes / scale:.2f} {unit}"
  return f"{int(num_bytes)} B"
# Vocabulary of bert-base-uncased, for a dry run whose tokenizer is a hub id that is not on disk.
FALLBACK_VOCAB_SIZE = 30522


@dataclasses.dataclass(frozen=True)
class StepCost:
  """The compiled train step's cost; bytes are per device, FLOPs for the whole step."""
  batch_size: int
  devices: int
  num_params: int
  params_bytes: int
  opt_state_bytes: int
  batch_bytes: int
  activation_bytes: int  # XLA's temporaries: activations, gradients, workspace
  output_bytes: int  # outputs not aliased to a donated input
  needed_bytes: int  # arguments + unaliased outputs + temporaries
  flops: float

  def line(self) -> str:
    return (f"{size(self.needed_bytes)} per device (parameters {size(self.params_bytes)}, "
            f"optimizer state {size(self.opt_state_bytes)}, activations and temporaries "
            f"{size(self.activation_bytes)}, batch {size(self.batch_bytes)})")


def _shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
  return total


def step_cost(parts: step_builder.StepParts, compiled: Any, batch_size: int) -> StepCost:
  """Reads the compiled step's memory and cost analyses."""
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0]
  devices = parts.mesh.size
  # XLA's cost analysis of an SPMD program counts one device's share.
  flops = float((cost or {}).get("flops", 0.0)) * devices
  outputs = int(memory.output_size_in_bytes) - int(memory.alias_size_in_bytes)
  needed = int(memory.argument_size_in_bytes) + outputs + int(memory.temp_size_in_bytes)
  return StepCost(batch_size=batch_size, devices=devices,
                  num_params=step_builder.num_parameters(parts),
                  params_bytes=_shard_bytes(parts.abstract_state.params),
                  opt_state_bytes=_shard_bytes(parts.abstract_state.opt_state),
                  batch_bytes=_shard_bytes(parts.abstract_batch(batch_size)),
                  activation_bytes=int(memory.temp_size_in_bytes), output_bytes=outputs,
                  needed_bytes=needed, flops=flops)


def _available_ram_bytes() -> int:
  with open("/proc/meminfo", encoding="ascii") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  raise OSError("no MemAvailable in /proc/meminfo")


def device_memory(preflight_config: ml_collections.ConfigDict) -> tuple[int, str]:
  """(bytes per device, where the figure comes from)."""
  if float(preflight_config.device_memory_gb) > 0:
    return (int(float(preflight_config.device_memory_gb) * GB),
            "config.preflight.device_memory_gb")
  devices = jax.local_devices()
  if devices[0].platform == "cpu":
    # The process's own arrays (the state) are already counted by the step's arguments.
    held = sum(int(x.nbytes) for x in jax.live_arrays())
    return ((_available_ram_bytes() + held) // len(devices),
            f"available RAM / {len(devices)} CPU devices")
  limits = [int((d.memory_stats() or {}).get("bytes_limit", 0)) for d in devices]
  if not all(limits):
    raise errors.ConfigError(f"{devices[0].platform} devices report no memory size; set "
                             "config.preflight.device_memory_gb, or "
                             "config.preflight.enabled=False to skip the check")
  return min(limits), f"{devices[0].device_kind} memory_stats()"


# (config, batch_size) -> StepCost of the step compiled for that config and batch.
CostFn = Callable[[ml_collections.ConfigDict, int], StepCost]


def make_cost_fn(*, vocab_size: int, num_classes: int) -> CostFn:
  """A CostFn that builds and compiles the step of any config (shapes only, see step_builder)."""

  def cost_fn(config: ml_collections.ConfigDict, batch_size: int) -> StepCost:
    parts = step_builder.build_step_parts(config, vocab_size=vocab_size, num_classes=num_classes)
    return step_cost(parts, parts.compile_train_step(batch_size), batch_size)

  return cost_fn


def _variant(config: ml_collections.ConfigDict, **changes: Any) -> ml_collections.ConfigDict:
  changed = copy.deepcopy(config)
  with changed.unlocked():
    for key, value in changes.items():
      node = changed
      *path, last = key.split(".")
      for part in path:
        node = node[part]
      node[last] = value
  return changed


def advice(config: ml_collections.ConfigDict, cost: StepCost, budget: int,
           cost_fn: CostFn) -> list[str]:
  """The config changes that would fit `budget` bytes per device.

  The bytes are affine in the batch size, so a second compile at half the batch gives the line
  that yields the largest batch_size that fits, and the activations of one micro-batch under
  gradient accumulation (plus a gradient accumulator the size of the parameters). bf16 compute and
  rematerialisation are compiled at the requested batch; XLA:CPU's analysis does not show what
  remat saves (it schedules the recomputation early), so remat is only compiled on accelerators.
  """
  out = []
  batch = cost.batch_size
  accum = int(config.grad_accum_steps)
  unit = cost.devices * accum  # batch sizes must split over devices and micro-batches
  smaller = max(unit, (batch // 2) // unit * unit)
  if smaller < batch:
    half = cost_fn(config, smaller)
    per_row = max(cost.needed_bytes - half.needed_bytes, 1) / (batch - smaller)
    fixed = cost.needed_bytes - per_row * batch
    largest = int((budget - fixed) // per_row) // unit * unit
    if largest >= unit:
      out.append(f"batch_size={largest} (the largest that fits, from compiles at {smaller} and "
                 f"{batch})")
    else:
      out.append(f"no batch_size fits ({smaller} rows need {size(half.needed_bytes)})")
    for k in (2, 4, 8, 16, 32, 64):
      k_total = accum * k
      if batch % (k_total * cost.devices):
        break
      estimate = fixed + per_row * batch / k + cost.params_bytes  # + the gradient accumulator
      if estimate <= budget:
        out.append(f"grad_accum_steps={k_total} (about {size(estimate)})")
        break
    else:
      out.append("no grad_accum_steps fits")
  options = []
  if clip_lib.compute_dtype(config.model) == jnp.float32:
    options.append(("model.dtype=bfloat16", {"model.dtype": "bfloat16"}))
  if not config.model.remat:
    if jax.default_backend() == "cpu":
      out.append("model.remat=True (not measurable on XLA:CPU; try it on the accelerator)")
    else:
      options.append(("model.remat=True", {"model.remat": True}))
  for name, changes in options:
    changed = cost_fn(_variant(config, **changes), batch)
    verdict = "fits" if changed.needed_bytes <= budget else "does not fit"
    out.append(f"{name} ({size(changed.needed_bytes)}: {verdict})")
  return out


def check(config: ml_collections.ConfigDict, cost: StepCost, cost_fn: CostFn) -> str:
  """Returns the one-line verdict when the step fits; raises ResourceError with advice if not."""
  budget, source = device_memory(config.preflight)
  summary = (f"the train step needs {size(cost.needed_bytes)} per device at batch_size "
             f"{cost.batch_size}; {size(budget)} available ({source})")
  if cost.needed_bytes <= budget:
    return summary
  fixes = advice(config, cost, budget, cost_fn)
  raise errors.ResourceError(
      f"{summary}: it will not fit. Options: {'; '.join(fixes)}. Or set "
      "config.preflight.enabled=False to skip this check.")


def shape_facts(config: ml_collections.ConfigDict) -> tuple[int, int, str]:
  """(vocab_size, num_classes, note) of the config's data without preparing or downloading it.

  The vocabulary is config.model.text.vocab_size when set, else the tokenizer's when it is on disk
  (a local path or the Hugging Face cache), else the size the dataset's own WordPiece is trained
  to, else FALLBACK_VOCAB_SIZE (noted).
  """
  data = config.data
  classes = len(chexpert.CATEGORIES)
  if data.name in input_pipeline.DATASETS and hasattr(input_pipeline.DATASETS[data.name],
                                                      "builder_cls"):
    classes = len(input_pipeline.DATASETS[data.name].builder_cls.CLASS_NAMES)
  if int(config.model.text.vocab_size) > 0:
    return int(config.model.text.vocab_size), classes, ""
  if not data.tokenizer:
    own = data.synth.vocab_size if data.name == "synth_cxr" else data.prepared.vocab_size
    return int(own), classes, ""
  try:
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    return len(AutoTokenizer.from_pretrained(data.tokenizer, local_files_only=True)), classes, ""
  except (OSError, ValueError):
    return FALLBACK_VOCAB_SIZE, classes, (
        f"tokenizer {data.tokenizer!r} is not on disk: vocabulary size {FALLBACK_VOCAB_SIZE} "
        "assumed (set --config.model.text.vocab_size=N for the exact figure)")


def measure_peak_flops(size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of float32 [size, size] matmuls, one per device at once, summed over the devices
  (best of `repeats`). Forced host devices share the machine's cores, so this is the machine's
  peak, not one core's times the device count."""
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d"))
  a = jax.device_put(jnp.ones((len(devices), size, size), jnp.float32) / size, sharding)
  matmul = jax.jit(lambda x: jnp.einsum("bij,bjk->bik", x, x))
  jax.block_until_ready(matmul(a))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a))
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 * len(devices) / best


def dry_run(config: ml_collections.ConfigDict, *, mfu: float, peak_tflops: float | None,
            print_fn: Callable[[str], None] = print) -> StepCost:
  """Compiles the train step from shapes only, prints its cost, and checks that it fits.

  Raises:
    ResourceError: when it does not fit (with the advice of `check`).
  """
  vocab_size, num_classes, note = shape_facts(config)
  cost_fn = make_cost_fn(vocab_size=vocab_size, num_classes=num_classes)

  start = time.perf_counter()
  cost = cost_fn(config, int(config.batch_size))
  compile_s = time.perf_counter() - start
  if peak_tflops:
    peak, peak_source = peak_tflops * 1e12 * cost.devices, "--peak_tflops x devices"
  else:
    peak, peak_source = measure_peak_flops(), "float32 matmul measured on all devices"
  step_s = cost.flops / (peak * mfu)
  device = jax.devices()[0]
  lines = [
      f"devices: {cost.devices} x {device.platform} ({device.device_kind})",
      f"batch_size: {cost.batch_size} ({cost.batch_size // cost.devices} per device)",
      f"parameters: {cost.num_params:,}",
      f"flops_per_step: {cost.flops:.4g}",
      f"params_bytes_per_device: {cost.params_bytes}",
      f"opt_state_bytes_per_device: {cost.opt_state_bytes}",
      f"activation_bytes_per_device: {cost.activation_bytes}",
      f"batch_bytes_per_device: {cost.batch_bytes}",
      f"needed_bytes_per_device: {cost.needed_bytes}",
      f"peak_flops: {peak:.4g} ({peak_source})",
      f"estimated_step_s: {step_s:.3g} at MFU {mfu}",
      f"compile_s: {compile_s:.1f}",
  ]
  if note:
    lines.append(f"note: {note}")
  for line in lines:
    print_fn(line)
  print_fn(check(config, cost, cost_fn))
  return cost
