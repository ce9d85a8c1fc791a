"""Evaluate a checkpoint: python -m clipmed.evaluate --config=configs/demo.py --workdir=DIR [--step=N]

Runs every task of config.evals on the checkpoint at --step (the latest complete one by default) and
writes DIR/results.json, DIR/results.md and TensorBoard scalars, exactly as the end of training does.
Use the same config (and arguments) the checkpoint was trained with.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from clipmed import console

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The config the checkpoint was trained with (path[:key=value,...]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir (holds checkpoints/).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; default: the latest.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  console.setup_logging()
  from clipmed import train  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(_WORKDIR.value)
  with console.user_errors_exit():
    train.evaluate_checkpoint(console.config_value(_CONFIG), workdir, _STEP.value)
  console.print_summary(workdir, evaluate_args=sys.argv[1:])


if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
