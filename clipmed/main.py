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
    "jobs, several local processes); the launchers in launch/ set it.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed where the cluster does not say it (SLURM "
    "and TPU pods do): host:port of the coordinator that process 0 starts, e.g. localhost:12345 "
    "for processes on this machine (launch/local_processes.sh).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --distributed where the cluster does not say it: the number of "
    "processes.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --distributed where the cluster does not say it: this process's "
    "index, 0 to num_processes - 1.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Compile the train step from shapes only (no data, no weights), print its "
    "parameters, FLOPs, bytes per device and estimated step time, and exit: 0 when it fits the "
    "device memory, 2 (with the changes that would fit) when it does not.")
_DEVICES = flags.DEFINE_integer(
    "devices", None, "With --dry_run: rehearse on this many forced CPU (host) devices, e.g. 8 "
    "for an 8-device data/fsdp layout on a laptop.")
_MFU = flags.DEFINE_float("mfu", 0.4, "With --dry_run: the model-FLOPs utilisation assumed for "
                          "the estimated step time.")
_PEAK_TFLOPS = flags.DEFINE_float(
    "peak_tflops", None, "With --dry_run: the device's peak TFLOP/s (datasheet) for the step-time "
    "estimate; default: a float32 matmul measured on this device.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  start = time.perf_counter()
  console.setup_logging()
  with console.user_errors_exit():
    config = console.config_value(_CONFIG)
  if _DEVICES.value is not None:
    if not _DRY_RUN.value or _DEVICES.value < 1:
      raise app.UsageError("--devices N (N >= 1) only goes with --dry_run")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                               f"--xla_force_host_platform_device_count={_DEVICES.value}").strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
  cluster = dict(coordinator_address=_COORDINATOR_ADDRESS.value,
                 num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  if not _DISTRIBUTED.value and any(v is not None for v in cluster.values()):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id only go with "
                         "--distributed")
  if config.deterministic:  # read by XLA when the backend starts, so before the first jax call
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_gpu_deterministic_ops=true").strip()
  # Imported here so that `--help` and flag errors are instant.
  import jax  # pylint: disable=g-import-not-at-top
  from clipmed import train  # pylint: disable=g-import-not-at-top

  if _DISTRIBUTED.value:
    jax.distributed.initialize(**cluster)  # None: from the cluster's environment
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())
  if _DRY_RUN.value:
    from clipmed import preflight  # pylint: disable=g-import-not-at-top
    with console.user_errors_exit():
      train.validate_config(config)
      preflight.dry_run(config, mfu=_MFU.value, peak_tflops=_PEAK_TFLOPS.value)
    return
  workdir = os.path.abspath(_WORKDIR.value)
  with console.user_errors_exit():
    results = train.train_and_evaluate(config, workdir)
  if results and jax.process_index() == 0:
    console.print_summary(workdir, evaluate_args=console.evaluate_args(sys.argv),
                          steps=config.num_train_steps, seconds=time.perf_counter() - start)


if __name__ == "__main__":
  app.run(main, flags_parser=console.parse_flags)
