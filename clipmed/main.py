"""Entry point: python -m clipmed.main --config=configs/demo.py --workdir=DIR

With clipmed/evaluate.py, the only modules that read flags. It initialises multi-host JAX when asked to, then hands the config
and workdir to clipmed.train.
"""

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from clipmed import console

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file, optionally with ':key=value,...' arguments.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events "
                               "and results. Rerunning with the same workdir resumes training.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host TPU pods, SLURM GPU "
    "jobs); the launchers in launch/ set it.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.perf_counter()
  console.setup_logging()
  with console.user_errors_exit():
    config = console.config_value(_CONFIG)
  if config.deterministic:  # read by XLA when the backend starts, so before the first jax call
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_gpu_deterministic_ops=true").strip()
  # Imported here so that `--help` and flag errors are instant.
  import jax  # pylint: disable=g-import-not-at-top
  from clipmed import train  # pylint: disable=g-import-not-at-top

  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  workdir = os.path.abspath(_WORKDIR.value)
  with console.user_errors_exit():
    results = train.train_and_evaluate(config, workdir)
  if results and jax.process_index() == 0:
    console.print_summary(workdir, evaluate_args=console.evaluate_args(sys.argv),
                          steps=config.num_train_steps, seconds=time.perf_counter() - start)


if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
