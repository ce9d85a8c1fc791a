"""Micro-benchmarks: `python -m clipmed.benchmark SUBCOMMAND [flags]`; each prints one JSON line.

  python -m clipmed.benchmark loss --batch 1024 --devices 8

Subcommands live in the `SUBCOMMANDS` dict: name -> (add_arguments(parser), run(args)). To add
one, write those two functions and add an entry. `--devices N` (every subcommand) forces N host
(CPU) devices: JAX fixes the device count when it starts, so the process re-executes itself with
XLA_FLAGS set before JAX starts its backends (importing JAX does not start them).
"""

import argparse
from collections.abc import Callable, Sequence
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from clipmed import losses

_DEVICE_FLAG = "--xla_force_host_platform_device_count"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ensure_host_devices(num_devices: int, argv: Sequence[str]) -> None:
  """Re-executes this module with N forced CPU devices unless XLA_FLAGS already says so."""
  flags = os.environ.get("XLA_FLAGS", "").split()
  wanted = f"{_DEVICE_FLAG}={num_devices}"
  if wanted in flags and os.environ.get("JAX_PLATFORMS") == "cpu":
    return
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join([f for f in flags if not f.startswith(_DEVICE_FLAG)] + [wanted])
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable, "-m", "clipmed.benchmark", *argv], env)


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


# name -> (add_arguments, run). run returns the JSON-serialisable result line.
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None],
                             Callable[[argparse.Namespace], dict[str, object]]]] = {
    "loss": (_add_loss_arguments, run_loss),
}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m clipmed.benchmark", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  for name, (add_arguments, _) in SUBCOMMANDS.items():
    sub_parser = sub.add_parser(name)
    sub_parser.add_argument("--devices", type=int, default=None,
                            help="force this many host (CPU) devices (default: JAX's devices)")
    add_arguments(sub_parser)
  return parser


def main(argv: Sequence[str] | None = None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = build_parser().parse_args(argv)
  if args.devices is not None:
    _ensure_host_devices(args.devices, argv)
  result = SUBCOMMANDS[args.command][1](args)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
