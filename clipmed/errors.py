"""Errors for user mistakes: a bad config value, a wrong path, unreadable or malformed data.

The command-line entry points (clipmed.main, clipmed.evaluate, input_pipeline.prepare) print a
`UserError` as one line and exit with status 2. They are raised on purpose, at the boundary where
the input is first checked; every other exception is a bug and keeps its traceback. Each subclass
also derives from the matching built-in type, so `except ValueError` keeps working for callers.
"""


class UserError(Exception):
  """A mistake the user can fix; the message names the file/field and says what to do."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work; the message names the field and what to set."""


class DataError(UserError, ValueError):
  """A dataset that is missing, malformed or not prepared; the message says how to fix it."""


class FileError(UserError, FileNotFoundError):
  """A path that does not exist or is not what was expected (a download, a checkpoint, ...)."""


class NotWritableError(UserError, PermissionError):
  """A directory clipmed must write (a data_dir, a workdir) that cannot be written."""


class WorkdirError(UserError):
  """A workdir that cannot be used: not writable, holding another run, or its disk failed."""


class NonFiniteError(UserError, RuntimeError):
  """Training diverged: too many consecutive steps with a non-finite loss or gradient."""


class ResourceError(UserError, MemoryError):
  """A run that does not fit the device's memory; the message says what would fit."""
