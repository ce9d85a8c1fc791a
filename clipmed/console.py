"""Console behaviour shared by the command-line entry points (clipmed.main, clipmed.evaluate,
input_pipeline.prepare): quiet logging, one-line user errors, flag parsing, the end-of-run summary."""

import contextlib
import logging as py_logging
import os
import sys
from collections.abc import Iterator



# Known library chatter at WARNING level that says nothing a clipmed user can act on.
_NOISE = (
    "Using custom data configuration",        # TFDS, for every builder config
    "has no dataset_info.json",               # TFDS, before a dataset is generated
    "Unable to initialize backend",           # JAX probing TPU/GPU plugins on a CPU machine
    # Orbax, when evaluation or predict restore only the train state of a checkpoint that also
    # holds the data iterator (which they do not need): nothing is wrong.
    'Item "data" was found in the checkpoint, but could not be restored',
)


def verbose() -> bool:
  """True when the user asked for library logs: --verbosity>=1 (absl's flag) or CLIPMED_VERBOSE=1."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  level = flags.FLAGS["verbosity"].value if flags.FLAGS.is_parsed() else 0
  return level >= 1 or os.environ.get("CLIPMED_VERBOSE", "0") not in ("", "0")


class _PlainFormatter(py_logging.Formatter):
  """`warning: message` instead of absl's timestamp, thread id and source location.

  A library's logged error keeps its logger's name, `error (orbax...): message`: the bare
  `error: ` prefix is clipmed's one-line report of a user mistake (user_errors_exit).
  """

  def format(self, record: py_logging.LogRecord) -> str:
    if record.levelno >= py_logging.ERROR:
      return f"{record.levelname.lower()} ({record.name}): {record.getMessage()}"
    return f"{record.levelname.lower()}: {record.getMessage()}"


class _Quiet(py_logging.Filter):
  """Drops INFO and below, known library noise, and repeats of a message already shown."""

  def __init__(self):
    super().__init__()
    self._seen: set[str] = set()

  def filter(self, record: py_logging.LogRecord) -> bool:
    if record.levelno < py_logging.WARNING:
      return False
    message = record.getMessage()
    if any(noise in message for noise in _NOISE) or message in self._seen:
      return False
    self._seen.add(message)
    return True


def setup_logging() -> bool:
  """Sets the console up for a command-line run (call first inside absl.app.run's main).

  By default only clipmed's own progress and status lines, warnings and errors reach the console:
  TensorFlow's C++ start-up lines, absl INFO lines (JAX backend probing, clu's per-scalar writer
  lines, Orbax and TFDS chatter) and repeated warnings are hidden; warnings print as
  `warning: ...`. With --verbosity=1 or CLIPMED_VERBOSE=1 every library line is shown as before.

  Returns:
    Whether the run is verbose.
  """
  if verbose():
    return True
  from absl import logging  # pylint: disable=g-import-not-at-top
  # Read by TensorFlow's C++ runtime when it loads (clu and TFDS import it later): 2 hides its
  # INFO and WARNING start-up lines (CUDA probing, CPU features); errors still show. TensorFlow
  # does no arithmetic in clipmed (it reads TFDS files and writes TensorBoard events), so turning
  # oneDNN off only removes the notice it prints regardless of the log level.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  logging.set_verbosity(logging.WARNING)
  quiet = _Quiet()
  for handler in (logging.get_absl_handler(), *py_logging.getLogger().handlers):
    handler.setFormatter(_PlainFormatter())
    handler.addFilter(quiet)
  return False


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
  """Turns a user mistake (a clipmed.errors.UserError) into one line on stderr and exit status 2.

  UserErrors are raised on purpose where input is checked; their messages name the field or file
  and say what to do. Every other exception keeps its traceback: it is a bug to report.
  """
  from clipmed.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    yield
  except UserError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_flags(argv: list[str], flag_values=None) -> list[str]:
  """absl's flag parsing, with a config file's own UserError (e.g. a bad `:key=value` argument)
  printed as one line and exit status 2 instead of ml_collections' traceback text.

  Use as `app.run(main, flags_parser=console.parse_flags)`; `flag_values` (absl's global flags by
  default) lets a library parse its own flag set.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from clipmed.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    return (flags.FLAGS if flag_values is None else flag_values)(argv)
  except flags.Error as e:
    # ml_collections re-raises the config's own error with its trace as the message: report the
    # innermost UserError of the chain, the one the config raised.
    cause, user_error = e.__context__, None
    while cause is not None:
      if isinstance(cause, UserError):
        user_error = cause
      cause = cause.__context__
    if user_error is not None:
      print(f"error: {user_error}", file=sys.stderr, flush=True)
    else:
      print(f"error: {e}\nPass --helpshort or --helpfull to see help on flags.", file=sys.stderr,
            flush=True)
    sys.exit(2)


def config_value(config_flag):
  """The config of a config-file flag holder; a file that cannot be loaded is a ConfigError.

  ml_collections defers a missing file's error to the first attribute access; this touches the
  config once so the error surfaces here, as one line.
  """
  from clipmed.errors import ConfigError  # pylint: disable=g-import-not-at-top
  config = config_flag.value
  try:
    config.get("seed")
  except OSError:
    given = config_flag.serialize()
    raise ConfigError(f"cannot load {given}: the file does not exist or does not define "
                      "get_config(); pass a config file, e.g. --config=configs/demo.py") from None
  return config


def _headline(metrics) -> list[str]:
  """One line per (evaluation, dataset): its summary metrics, not per-class values or chance."""
  from clipmed.evaluators import results as results_lib  # pylint: disable=g-import-not-at-top
  groups: dict[tuple[str, str], list[str]] = {}
  for key, m in metrics.items():
    task, dataset, metric = key.split("/", 2)
    last = metric.rsplit("/", 1)[-1]
    if last.startswith("chance") or ("/" in metric and last != "mean_auroc"):
      continue
    groups.setdefault((task, dataset), []).append(f"{metric} {results_lib.fmt(m.value)}")
  return [f"  {task} ({dataset}): {', '.join(items)}" for (task, dataset), items in groups.items()]


def print_summary(workdir: str, *, evaluate_args: list[str], steps: int | None = None,
                  seconds: float | None = None) -> None:
  """The end of a run: headline metrics, where everything is, how to evaluate again or resume.

  Args:
    workdir: the run's workdir (holds results.json, results.md, checkpoints/, TensorBoard events).
    evaluate_args: the command-line arguments that re-evaluate this run with clipmed.evaluate.
    steps, seconds: the training this process did (omitted after an evaluation-only run).
  """
  import shlex  # pylint: disable=g-import-not-at-top
  from clipmed.evaluators import results as results_lib  # pylint: disable=g-import-not-at-top
  from clipmed.evaluators.runner import PAPER_TABLES_HEADING  # pylint: disable=g-import-not-at-top
  metrics, _ = results_lib.read(os.path.join(workdir, "results.json"))
  done = "Evaluation done."
  if steps is not None and seconds is not None:
    minutes, secs = divmod(int(round(seconds)), 60)
    done = f"Done: trained to step {steps} and evaluated in {minutes} min {secs} s."
  lines = ["", done, "Headline results (95% intervals and per-class values in results.md):",
           *_headline(metrics), ""]
  with open(os.path.join(workdir, "results.md"), encoding="utf-8") as f:
    markdown = f.read()
  if PAPER_TABLES_HEADING in markdown:  # paper_eval runs: the tables laid out like the paper's
    lines += [markdown[markdown.index(PAPER_TABLES_HEADING):].rstrip(), ""]
  lines += [f"  results      {os.path.join(workdir, 'results.md')} (and results.json)",
            f"  checkpoints  {os.path.join(workdir, 'checkpoints')}",
            f"  TensorBoard  tensorboard --logdir {shlex.quote(workdir)}",
            f"  evaluate     python -m clipmed.evaluate {shlex.join(evaluate_args)}",
            "  resume       rerun the same command: training continues from the latest checkpoint "
            "(raise config.num_train_steps to train longer)"]
  print("\n".join(lines), flush=True)


def evaluate_args(argv: list[str]) -> list[str]:
  """The arguments of clipmed.main's command line that clipmed.evaluate takes too."""
  training_only = ("--distributed", "--nodistributed", "--coordinator_address", "--num_processes",
                   "--process_id", "--dry_run", "--nodry_run", "--devices")
  return [a for a in argv[1:] if a.split("=", 1)[0] not in training_only]
