"""Benchmarks: `python -m clipmed.benchmark SUBCOMMAND [flags]`; each prints one JSON line.

  python -m clipmed.benchmark train --config=configs/full.py:row=clip --batch 8 --steps 5
  python -m clipmed.benchmark train --config=configs/full.py:row=clip --batch 8 --profile DIR
  python -m clipmed.benchmark input --config=configs/full.py:dataset=synth_cxr \
      --config.data.tokenizer= --batches 20
  python -m clipmed.benchmark eval --config=configs/full.py --batch 32
  python -m clipmed.benchmark loss --batch 1024 --devices 8
  python -m clipmed.benchmark wordpiece --reports 200000 --vocab-size 30000
  python -m clipmed.benchmark prepare --dataset mimic_cxr --manual_dir DIR [--workers 1]
  python -m clipmed.benchmark embed --config full --batch 32

train, input and eval take the config exactly as `python -m clipmed.main` does
(`--config=FILE[:args]` and `--config.key=value` overrides). `train` times the real train step,
built and compiled by clipmed/step_builder.py as training builds it, on random weights and a
random batch of the config's shapes (nothing is read or downloaded).

Subcommands live in the `SUBCOMMANDS` dict: name -> (add_arguments(parser), run(args)); the
model's (train, input, eval, embed, loss) in model.py, the data's (prepare, wordpiece) in data.py.
To add one, write those two functions and add an entry. `--devices N` (every subcommand) forces N
host (CPU) devices: JAX fixes the device count when it starts, so the process re-executes itself
with XLA_FLAGS set before JAX starts its backends (importing JAX does not start them); `train
--profile DIR` does the same for XLA:CPU's per-instruction trace events (see profile.py).
"""

import argparse
from collections.abc import Callable, Sequence
import json
import os
import sys
from typing import Any

from clipmed.benchmark.data import (_add_prepare_arguments, _add_wordpiece_arguments,
                                    radiology_like_reports, run_prepare, run_wordpiece)
from clipmed.benchmark import profile
from clipmed.benchmark.model import (_add_embed_arguments, _add_eval_arguments,
                                     _add_input_arguments, _add_loss_arguments,
                                     _add_train_arguments, run_embed, run_eval, run_input,
                                     run_loss, run_train)

_DEVICE_FLAG = "--xla_force_host_platform_device_count"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ensure_xla_flags(wanted: Sequence[str], argv: Sequence[str], cpu_only: bool) -> None:
  """Re-executes this module with `wanted` in XLA_FLAGS unless they are there already.

  XLA reads its flags when JAX starts its backends (importing JAX does not start them), so the
  process restarts itself with the flags set. `cpu_only` also sets JAX_PLATFORMS=cpu.
  """
  flags = os.environ.get("XLA_FLAGS", "").split()
  if all(f in flags for f in wanted) and (
      not cpu_only or os.environ.get("JAX_PLATFORMS") == "cpu"):
    return
  names = {f.split("=", 1)[0] for f in wanted}
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join([f for f in flags if f.split("=", 1)[0] not in names] + list(wanted))
  if cpu_only:
    env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable, "-m", "clipmed.benchmark", *argv], env)


def _load_config(config_args: Sequence[str]) -> Any:
  """The config of `--config=FILE[:args]` and `--config.key=value` items, parsed exactly as
  clipmed.main parses them (a user mistake: one line and exit status 2)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from clipmed import console, errors  # pylint: disable=g-import-not-at-top
  # A flag set of its own: clipmed.main or clipmed.evaluate may have defined --config on absl's
  # global flags in this process (a notebook, the tests).
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
      "config", None, "Path to a config file, optionally with ':key=value,...' arguments.",
      lock_config=True, flag_values=flag_values)
  console.parse_flags(["clipmed.benchmark", *config_args], flag_values=flag_values)
  if holder.value is None:
    raise errors.ConfigError("pass --config=FILE[:args], e.g. --config=configs/full.py")
  return console.config_value(holder)


# Subcommands whose --config is a config file with overrides, as in clipmed.main.
CONFIG_SUBCOMMANDS = ("train", "input", "eval")

# name -> (add_arguments, run). run returns the JSON-serialisable result line.
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None],
                             Callable[[argparse.Namespace], dict[str, object]]]] = {
    "train": (_add_train_arguments, run_train),
    "input": (_add_input_arguments, run_input),
    "eval": (_add_eval_arguments, run_eval),
    "loss": (_add_loss_arguments, run_loss),
    "prepare": (_add_prepare_arguments, run_prepare),
    "embed": (_add_embed_arguments, run_embed),
    "wordpiece": (_add_wordpiece_arguments, run_wordpiece),
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
  config_args = []
  if argv and argv[0] in CONFIG_SUBCOMMANDS:
    config_args = [a for a in argv if a.startswith("--config")]
  args = build_parser().parse_args([a for a in argv if a not in config_args])
  wanted = [f"{_DEVICE_FLAG}={args.devices}"] if args.devices is not None else []
  if getattr(args, "profile", None):
    wanted.append(profile.TRACEME_FLAG)  # XLA:CPU names trace events after instructions
  if wanted:
    _ensure_xla_flags(wanted, argv, cpu_only=args.devices is not None)
  if args.command in CONFIG_SUBCOMMANDS:
    from clipmed import console  # pylint: disable=g-import-not-at-top
    with console.user_errors_exit():
      args.config_dict = _load_config(config_args)
  result = SUBCOMMANDS[args.command][1](args)
  print(json.dumps(result), flush=True)
