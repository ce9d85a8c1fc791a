"""Positive/negative prompt sets (data files in clipmed/evaluators/prompts/) and their scores.

A prompt file is JSON:
  {"description": "...",
   "classes": {"Cardiomegaly": {"positive": ["Cardiomegaly.", ...],
                                "negative": ["Normal heart size.", ...]}, ...}}
Class names are the dataset's (its builder's CLASS_NAMES): one prompt file per label vocabulary
(chexpert.json for the CheXpert-14 datasets, rsna_pneumonia.json, cxr14.json, ...).

The yes/no decision and the class prior. A contrastive (InfoNCE) model at its optimum scores an
image x against a text t with log p(t | x) / p(t) plus a term of x alone (van den Oord et al.
2018, "Representation Learning with Contrastive Predictive Coding"; Poole et al. 2019, "On
Variational Bounds of Mutual Information"). The zero-shot logit, positive minus negative prompt
score, is therefore the posterior log odds of the finding *minus its prior log odds*: a
likelihood ratio, not a probability. Answering "present" when the logit is above 0 (CheXzero's
protocol) says "yes" whenever the image makes the finding likelier than its base rate, so a rare
finding is answered "yes" far more often than it occurs. The decision tasks (zero_shot's rates,
adversarial) add the prior log odds of each class first: config field `prior`, the name of a
split of the evaluated dataset whose label rates are the prior ("train", the default), or "none"
for the logit alone. On the training dataset that is the rate in the reports the model learned
from; on another dataset it is that dataset's base rate, which is the prior its images need (the
likelihood ratio carries over between populations, the prior does not). AUROCs and other
rankings do not depend on it.

Calibrating the offset (config field `calibrate`, default True). The prior alone assumes the
logit is the likelihood ratio; a model far from the contrastive optimum, or prompts it never saw
in training, add an unknown bias per class, and a rare finding is still answered "yes" several
times more often than it occurs. With calibrate=True the offset of each class is instead the
number b_k for which the mean predicted probability over the `prior` split's images equals that
split's class rate pi_k: mean_n sigmoid(logit_nk + b_k) = pi_k. A calibrated posterior must
satisfy this (the law of total probability); it uses the split's images and its class rates, no
per-image labels, and nothing of the evaluated split. It embeds the prior split's images (shared
with a linear probe trained on the same split). With calibrate=False the offset is the prior log
odds alone.
"""

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
from absl import logging

from clipmed import errors
from clipmed.evaluators.base import EvalContext, Evaluator
from clipmed.report import chexpert

PROMPT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")


@dataclasses.dataclass(frozen=True)
class PromptSet:
  positive: tuple[str, ...]
  negative: tuple[str, ...]


def slug(name: str) -> str:
  """Category name -> metric-name fragment: "Pleural Effusion" -> "pleural_effusion"."""
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def prompt_path(name_or_path: str) -> str:
  """A bundled prompt set name ("chexpert") or a path to a .json file -> the file path."""
  if name_or_path.endswith(".json") or os.sep in name_or_path:
    return name_or_path
  return os.path.join(PROMPT_DIR, f"{name_or_path}.json")


def load_prompts(name_or_path: str, classes: Sequence[str]) -> dict[str, PromptSet]:
  """Loads and checks the prompt sets of `classes`.

  Raises:
    ValueError: naming the file and the offending class when the file is missing, malformed, or
      lacks a nonempty positive and negative set for a requested class.
  """
  path = prompt_path(name_or_path)
  if not os.path.exists(path):
    bundled = sorted(f[:-5] for f in os.listdir(PROMPT_DIR) if f.endswith(".json"))
    raise errors.ConfigError(f"prompt file {path} does not exist; set `prompts` in the eval config "
                             f"to one of the bundled sets {bundled} or to a .json path")
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise errors.ConfigError(
        f"prompt file {path} is not valid JSON (line {e.lineno}): {e.msg}") from None
  table = data.get("classes") if isinstance(data, dict) else None
  if not isinstance(table, dict):
    raise errors.ConfigError(f"prompt file {path} must be an object with a \"classes\" mapping")
  out = {}
  for name in classes:
    entry = table.get(name)
    if entry is None:
      raise errors.ConfigError(f"prompt file {path} has no prompts for class {name!r}; add "
                               f"\"{name}\": {{\"positive\": [...], \"negative\": [...]}}")
    sets = []
    for kind in ("positive", "negative"):
      prompts = entry.get(kind) if isinstance(entry, dict) else None
      if (not isinstance(prompts, list) or not prompts
          or not all(isinstance(p, str) and p.strip() for p in prompts)):
        raise errors.ConfigError(f"prompt file {path}, class {name!r}: \"{kind}\" must be a "
                                 "nonempty "
                                 "list of nonempty strings")
      sets.append(tuple(prompts))
    out[name] = PromptSet(*sets)
  return out


def prompt_sha256(prompts: dict[str, PromptSet], classes: Sequence[str]) -> str:
  """SHA-256 of the prompt texts of `classes`, in order: names the prompts that a decision offset
  was fitted with, so that it is never applied to the logits of other prompts."""
  texts = [[name, list(prompts[name].positive), list(prompts[name].negative)] for name in classes]
  return hashlib.sha256(json.dumps(texts).encode("utf-8")).hexdigest()


def prior_log_odds(positive: np.ndarray, counted: np.ndarray) -> np.ndarray:
  """[K] log odds of each class's rate among its counted rows, (positives + 1/2) / (counted + 1):
  finite even for a class without positives or without negatives.

  Args:
    positive: [N, K] bool.
    counted: [N, K] bool; rows not counted for a class (uncertain labels) are left out of it.
  """
  pos = np.sum(positive & counted, axis=0) + 0.5
  neg = np.sum(~positive & counted, axis=0) + 0.5
  return np.log(pos / neg)


def calibrated_offset(logits: np.ndarray, rate_log_odds: np.ndarray) -> np.ndarray:
  """[K] offsets b with mean over rows of sigmoid(logits[:, k] + b_k) = sigmoid(rate_log_odds[k]).

  The mean is increasing in b_k, below the target at rate_log_odds - max|logit| - 1 and above it
  at rate_log_odds + max|logit| + 1; bisection between the two to float64 precision.

  Args:
    logits: [N, K] zero-shot logits of the calibration images, N >= 1.
    rate_log_odds: [K] log odds of the class rates (prior_log_odds of the same split).
  """
  logits = np.asarray(logits, np.float64)
  target = np.asarray(rate_log_odds, np.float64)
  width = np.abs(logits).max(axis=0) + 1.0
  lo, hi = target - width, target + width
  rate = 0.5 * (1.0 + np.tanh(0.5 * target))  # sigmoid without overflow
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    above = (0.5 * (1.0 + np.tanh(0.5 * (logits + mid[None, :])))).mean(axis=0) > rate
    hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
  return 0.5 * (lo + hi)


def says_yes(scores: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
  """[N, K] zero-shot logits -> [N, K] bool "present": logit plus the class's decision offset
  ([K]: the prior log odds or the calibrated offset; None: zeros, the logit alone, as examples
  saved before the prior existed) above 0."""
  if offset is None:
    return scores > 0
  return scores + np.asarray(offset)[None, :] > 0


def recorded_offset(examples: dict[str, np.ndarray]) -> np.ndarray | None:
  """The decision offset saved with a task's examples: "decision_offset", or for examples saved
  before calibration existed "prior_log_odds", or None for those saved before the prior."""
  if "decision_offset" in examples:
    return examples["decision_offset"]
  return examples.get("prior_log_odds")


class PromptTask(Evaluator):
  """An evaluation that asks about `classes` with the prompt sets of `prompts` (both config
  fields), loaded and checked when the evaluator is built; `prior` (optional, default "train")
  names the split whose class rates shift the yes/no decision (module docstring), or "none";
  `calibrate` (optional, default True) fits that shift on the prior split's images."""
  required_fields = ("prompts", "classes")

  def __init__(self, config, name=None):
    super().__init__(config, name)
    self.classes = list(config.classes)
    self.prompts = load_prompts(config.prompts, self.classes)
    self.prior = config.get("prior", "train")
    if not isinstance(self.prior, str) or not self.prior.strip():
      raise errors.ConfigError(f"config.evals.{self.name}.prior={self.prior!r}: give the name of "
                               "a labelled split whose class rates are the prior (\"train\") or "
                               "\"none\" (with calibrate=False) to decide on the zero-shot logit "
                               "alone")
    self.calibrate = config.get("calibrate", True)
    if not isinstance(self.calibrate, bool):
      raise errors.ConfigError(f"config.evals.{self.name}.calibrate={self.calibrate!r}: give True "
                               "or False")
    if self.calibrate and self.prior == "none":
      raise errors.ConfigError(f"config.evals.{self.name}.calibrate=True (the default) needs a "
                               "prior split to calibrate on; name a labelled split "
                               "(prior=\"train\"), or decide on the logit alone: "
                               f"{self._logit_alone()}")

  def _logit_alone(self) -> str:
    """The overrides that make this task decide on the zero-shot logit alone."""
    return (f"--config.evals.{self.name}.prior=none "
            f"--config.evals.{self.name}.calibrate=False")

  def decision(self, ctx: EvalContext, columns: Sequence[int],
               keep: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The yes/no decision's offsets, recorded with the task's examples: "prior_log_odds" [K],
    the log odds of the classes' (`columns` of the dataset's labels) rates on the `prior` split,
    and "decision_offset" [K], what the decision adds to the logits: the prior log odds, or with
    `calibrate` the offsets fitted on the prior split's images (module docstring); zeros for
    prior="none"; and "prompt_sha256", the prompts they belong to (clipmed.predict reuses the
    offsets only with the same prompt texts). `keep` (labels [N, C] -> [N] bool) selects the
    prior split's rows.

    Raises:
      ConfigError: the dataset has no such split, or it has no rows (left).
    """
    prompts = np.asarray(prompt_sha256(self.prompts, self.classes))
    if self.prior == "none":
      zeros = np.zeros(len(columns))
      return {"prior_log_odds": zeros, "decision_offset": zeros, "prompt_sha256": prompts}
    try:
      labels = ctx.split_labels(self.prior)
    except errors.ConfigError as e:  # e.g. a dataset without that split
      raise errors.ConfigError(f"config.evals.{self.name}.prior={self.prior!r}: {e}; name a "
                               "labelled split of it, or decide on the logit alone: "
                               f"{self._logit_alone()}") from None
    rows = keep(labels) if keep is not None else np.ones(labels.shape[0], bool)
    if not np.any(rows):
      raise errors.ConfigError(f"config.evals.{self.name}.prior={self.prior!r}: that split of "
                               f"{ctx.dataset} has no rows to take class rates from; name another "
                               f"split, or decide on the logit alone: {self._logit_alone()}")
    labels = labels[rows][:, list(columns)]
    prior = prior_log_odds(labels == chexpert.POSITIVE, labels != chexpert.UNCERTAIN)
    logging.info("%s: decision prior from %s/%s (%d rows): %s", self.name, ctx.dataset,
                 self.prior, int(rows.sum()),
                 ", ".join(f"{c} {1 / (1 + np.exp(-o)):.3f}" for c, o in zip(self.classes, prior)))
    offset = prior
    if self.calibrate:
      images = ctx.split(self.prior).image[rows]
      offset = calibrated_offset(prompt_logits(ctx, images, self.prompts, self.classes), prior)
      logging.info("%s: calibrated decision offsets on %d %s images (prior log odds -> offset): "
                   "%s", self.name, int(rows.sum()), self.prior,
                   ", ".join(f"{c} {p:+.2f} -> {o:+.2f}"
                             for c, p, o in zip(self.classes, prior, offset)))
    return {"prior_log_odds": prior, "decision_offset": offset, "prompt_sha256": prompts}


def prompt_logits(ctx: EvalContext, image: np.ndarray, prompts: dict[str, PromptSet],
                  classes: Sequence[str]) -> np.ndarray:
  """CheXzero-style zero-shot logits: s * (mean positive similarity - mean negative similarity).

  The probability of "positive" is softmax over the two mean prompt similarities times the logit
  scale s, i.e. sigmoid of this logit. Tasks rank by the logit: it is monotone in the probability
  and does not saturate into artificial ties at large s.

  Args:
    ctx: evaluation context (text embeddings, logit scale).
    image: [N, D] L2-normalised image embeddings.
    prompts: per-class prompt sets.
    classes: the K classes, in output order.

  Returns:
    [N, K] float64 logits.
  """
  texts = [t for c in classes for t in prompts[c].positive + prompts[c].negative]
  emb = ctx.encode_text(texts).astype(np.float64)                     # [M, D]
  sims = np.asarray(image, np.float64) @ emb.T                         # [N, M]
  out = np.empty((image.shape[0], len(classes)))
  start = 0
  for k, c in enumerate(classes):
    n_pos, n_neg = len(prompts[c].positive), len(prompts[c].negative)
    pos = sims[:, start:start + n_pos].mean(axis=1)
    neg = sims[:, start + n_pos:start + n_pos + n_neg].mean(axis=1)
    out[:, k] = ctx.logit_scale * (pos - neg)
    start += n_pos + n_neg
  return out
