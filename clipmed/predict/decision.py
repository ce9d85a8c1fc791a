"""The zero-shot yes/no decision of clipmed.predict: what is added to a finding's logit before
sigmoid, as the evaluation adds it (clipmed/evaluators/prompt_sets.py): a prior rate's log odds,
offsets calibrated on a population's images to those rates, or the offsets a run's evaluation
fitted and saved with its examples.
"""

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from clipmed import errors
from clipmed.evaluators import prompt_sets
from clipmed.evaluators import results as results_lib
from clipmed.models import saved


@dataclasses.dataclass(frozen=True)
class DecisionOffsets:
  """The yes/no offsets an evaluation fitted and saved with its examples (evaluation_offsets):
  `offset` [K] of the findings `classes`, for the weights of training step `step` and the prompt
  texts that hash to `prompt_sha256` (prompt_sets.prompt_sha256); `source` is the file."""
  classes: tuple[str, ...]
  offset: np.ndarray
  step: int
  prompt_sha256: str
  source: str

  def for_model(self, model: Any, classes: Sequence[str], prompts=None) -> np.ndarray:
    """[K] offsets of `classes` (names as Model.prompt_sets returns them) for the logits of
    `model` (a clipmed.predict.Model) with `prompts`.

    Raises:
      ConfigError: the model's step or the prompt texts differ from the evaluation's, or a class
        was not evaluated.
    """
    if model.step != self.step:
      raise errors.ConfigError(f"{self.source} was fitted for the weights of step {self.step}; "
                               f"this model is step {model.step}: load step {self.step}, or "
                               "evaluate this step (python -m clipmed.evaluate --step ...)")
    evaluated, sets = model.prompt_sets(list(self.classes), prompts)
    if prompt_sets.prompt_sha256(sets, evaluated) != self.prompt_sha256:
      given = ("the prompts given" if isinstance(prompts, Mapping)
               else repr(prompts or model.default_prompts))
      raise errors.ConfigError(f"{self.source} was fitted with other prompt texts than {given} "
                               "gives these findings; score them with the prompts the "
                               "evaluation used")
    missing = [name for name in classes if name not in evaluated]
    if missing:
      raise errors.ConfigError(f"{self.source} has no offset for {missing}; the evaluated "
                               f"findings are {list(evaluated)}")
    return np.array([self.offset[evaluated.index(name)] for name in classes])

  def save(self, path: str) -> None:
    """Writes the offsets alone (no image or study of the evaluated split) as a .npz file that
    evaluation_offsets reads back; clipmed.export puts them into an export this way."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, classes=np.array(self.classes), decision_offset=self.offset,
             step=np.int64(self.step), prompt_sha256=np.array(self.prompt_sha256))


def evaluation_offsets(path: str, name: str = "zero_shot",
                       dataset: str | None = None) -> DecisionOffsets:
  """The yes/no offsets the evaluation `name` (a config.evals key) saved in a training workdir
  (examples/<name>/<dataset>.npz) or that an export carries (decision_offsets/<name>/<dataset>.npz;
  `dataset` may be left out when only one was evaluated), or in the .npz file `path`.

  Raises:
    FileError: no such evaluation was saved.
    ConfigError: several datasets and none chosen, or examples without a yes/no decision.
  """
  path = os.path.expanduser(os.fspath(path))
  if not path.endswith(".npz"):
    folder = os.path.join(path, saved.DECISIONS, name)
    if not os.path.isdir(folder):
      folder = os.path.join(path, results_lib.EXAMPLES_DIR, name)
    found = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".npz")) if os.path.isdir(
        folder) else []
    if not found:
      raise errors.FileError(f"{path} has no saved {name!r} evaluation ({folder}/*.npz); "
                             f"evaluate it first: python -m clipmed.evaluate --workdir={path} "
                             "--config=<its config> (an export carries the evaluations that its "
                             "workdir held for its step)")
    if dataset is None and len(found) > 1:
      raise errors.ConfigError(f"{folder} holds the evaluations of {found}; choose one "
                               "(dataset=, or the .npz file itself)")
    if dataset is not None and dataset not in found:
      raise errors.FileError(f"{folder} has no evaluation of {dataset!r}, only of {found}")
    path = os.path.join(folder, f"{dataset or found[0]}.npz")
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
  except (OSError, ValueError) as e:
    raise errors.FileError(f"cannot read {path}: {e}") from None
  if "prompt_sha256" not in arrays or "decision_offset" not in arrays:
    raise errors.ConfigError(f"{path} records no reusable yes/no decision (a task without one, "
                             "or evaluated before clipmed saved its prompts); evaluate the "
                             "workdir again with python -m clipmed.evaluate")
  return DecisionOffsets(classes=tuple(str(c) for c in arrays["classes"]),
                         offset=np.asarray(arrays["decision_offset"], np.float64),
                         step=int(arrays["step"]), prompt_sha256=str(arrays["prompt_sha256"]),
                         source=path)


def prior_offset(classes: Sequence[str], priors: Mapping[str, float] | None) -> np.ndarray:
  """[K] log(p / (1 - p)) of each class's prior rate p from `priors` (names matched
  case-insensitively; a class without one: 0, i.e. p = 1/2, the logit alone).

  Raises:
    ConfigError: a prior names no scored finding or is not a rate strictly between 0 and 1.
  """
  offset = np.zeros(len(classes))
  index = {name.lower(): k for k, name in enumerate(classes)}
  for name, rate in (priors or {}).items():
    k = index.get(str(name).strip().lower())
    if k is None:
      raise errors.ConfigError(f"a prior is given for {name!r}, which is not among the scored "
                               f"findings {list(classes)}")
    try:
      rate = float(rate)
    except (TypeError, ValueError):
      rate = float("nan")
    if not 0.0 < rate < 1.0:
      raise errors.ConfigError(f"the prior of {name!r} must be a rate strictly between 0 and 1 "
                               f"(e.g. 0.12 for 12% of studies), got {priors[name]!r}")
    offset[k] = np.log(rate / (1.0 - rate))
  return offset


def check_calibration_priors(classes: Sequence[str], priors: Mapping[str, float] | None) -> None:
  """Raises ConfigError unless every class has a prior rate (calibration fits each to its own)."""
  given = {str(name).strip().lower() for name in (priors or {})}
  missing = [name for name in classes if name.lower() not in given]
  if missing:
    raise errors.ConfigError(f"calibration fits each finding to its prior rate; give a prior for "
                             f"{missing} too (e.g. its rate in your population)")


def calibrate(classes: Sequence[str], priors: Mapping[str, float] | None,
              logits: np.ndarray) -> np.ndarray:
  """[K] offsets fitted on the [M, K] zero-shot logits of unlabelled images of a population so
  that their mean probability equals each class's prior rate (prompt_sets.calibrated_offset).

  Raises:
    ConfigError: a scored class has no prior rate, or there are no calibration images.
  """
  check_calibration_priors(classes, priors)
  if logits.shape[0] == 0:
    raise errors.ConfigError("no calibration images could be read; give images of the population "
                             "the priors describe")
  return prompt_sets.calibrated_offset(logits, prior_offset(classes, priors))


def probabilities(logits: np.ndarray, offset: np.ndarray) -> np.ndarray:
  """[N, K] zero-shot logits and [K] prior log odds (prior_offset) -> sigmoid(logit + offset)."""
  return 1.0 / (1.0 + np.exp(-(np.asarray(logits, np.float64) + offset[None, :])))


def decision_offset(model: Any, classes: Sequence[str], prompts=None, *,
                    priors: Mapping[str, float] | None = None,
                    offsets: DecisionOffsets | None = None,
                    population: Callable[[], np.ndarray] | None = None) -> np.ndarray:
  """[K] what the decision adds to the zero-shot logits of `classes` (of `model`, a
  clipmed.predict.Model, with `prompts`): the log odds of the `priors` (none: zeros); with
  `population`, which returns the [M, K] logits of a population's images and is called only once
  the priors are checked, offsets calibrated to the priors (calibrate); or an evaluation's
  `offsets` (DecisionOffsets.for_model).

  Raises:
    ConfigError: `offsets` together with priors or a population, or what prior_offset,
      calibrate and DecisionOffsets.for_model raise.
  """
  if offsets is not None and (priors is not None or population is not None):
    raise errors.ConfigError("give either an evaluation's offsets or priors (and calibration "
                             "images), not both")
  offset = prior_offset(classes, priors)  # checks the priors
  if offsets is not None:
    return offsets.for_model(model, classes, prompts)
  if population is not None:
    check_calibration_priors(classes, priors)  # before any image is read
    return calibrate(classes, priors, population())
  return offset
