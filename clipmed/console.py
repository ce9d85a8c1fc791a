"""Console behaviour shared by the command-line entry points (clipmed.main, clipmed.evaluate)."""

import contextlib
import logging as py_logging
import os
import sys
from collections.abc import Iterator



class _QuietLibraries(py_logging.Filter):
  """Drops INFO chatter of Orbax and TFDS (dozens of lines per checkpoint); keeps warnings."""

  _NOISY = (f"{os.sep}orbax{os.sep}", f"{os.sep}tensorflow_datasets{os.sep}")

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or not any(
        part in record.pathname for part in self._NOISY)


def quiet_library_logs() -> None:
  """Installs the filter on the absl handlers (call inside absl.app.run's main)."""
  for logger in (py_logging.getLogger("absl"), py_logging.getLogger()):
    logger.addFilter(_QuietLibraries())
    for handler in logger.handlers:
      handler.addFilter(_QuietLibraries())


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


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a config file's own UserError (e.g. a bad `:key=value` argument)
  printed as one line and exit status 2 instead of ml_collections' traceback text.

  Use as `app.run(main, flags_parser=console.parse_flags)`.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from clipmed.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
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
  from absl import flags  # pylint: disable=g-import-not-at-top
  from clipmed.errors import ConfigError  # pylint: disable=g-import-not-at-top
  config = config_flag.value
  try:
    config.get("seed")
  except OSError:
    given = flags.FLAGS[config_flag.name].serialize()
    raise ConfigError(f"cannot load {given}: the file does not exist or does not define "
                      "get_config(); pass a config file, e.g. --config=configs/demo.py") from None
  return config


def print_results(workdir: str) -> None:
  """Prints DIR/results.md (the evaluation tables) to stdout."""
  path = os.path.join(workdir, "results.md")
  with open(path, encoding="utf-8") as f:
    print(f.read(), flush=True)
  print(f"(written to {path} and {os.path.join(workdir, 'results.json')})", flush=True)
