"""Zero-shot classification with positive/negative prompt sets (CheXzero style).

Config fields (config.evals.<name>):
  task="zero_shot", dataset="", split="test", every_steps=0, num_bootstrap=1000,
  prompts="chexpert"     bundled prompt set name or a path to a .json prompt file
  classes=[...]          the dataset's class names to evaluate
  where={}               keep only rows whose labels equal these values, e.g. {"Normal": 0.0}
                         for RSNA-ab (pneumonia against the other abnormal images)
  prior="train"          the split whose class rates (of the rows `where` keeps) are the prior of
                         the yes/no decision, or "none" (prompt_sets: why a prior)
  calibrate=True         the decision offset is fitted on that split's images so that the mean
                         predicted probability equals each class rate (prompt_sets); False: the
                         prior log odds alone

Per class, the score of a study is softmax over (mean similarity to the positive prompts, mean
similarity to the negative prompts) times the logit scale; the metric is the binary AUROC.
Ground truth for a class: labeler value 1 is positive; 0 and not mentioned (NaN) are negative;
uncertain (-1) studies are left out of that class's AUROC (they are neither a clean positive nor a
clean negative; they still count for the other classes). A class without positives or without
negatives on the split gets NaN and is left out of "mean_auroc", the mean over the configured
classes. Metrics: "auroc/<class slug>" (e.g. auroc/pleural_effusion) and "mean_auroc", each with a
bootstrap interval over studies (the mean's resamples are paired across classes).

High per-class AUROCs do not show whether the model tells findings apart or ranks images by one
"how abnormal" score; with two or more classes these metrics can tell (all with intervals):
  "within_image": over the images with a present class p and an absent class a (absent: 0 or not
    mentioned, without the CheXpert-hierarchy ancestors of a present class, see findings.py), the
    fraction of (p, a) pairs with score(p) > score(a), ties one half; averaged per image, then
    over images. 0.5 for a model that scores all findings of an image alike.
  "positive_rate/<slug>" and "prevalence/<slug>": how often the zero-shot decision says
    "present" (logit + decision offset > 0: the prior log odds, or the calibrated offset; with
    prior="none", logit > 0: the positive prompts win), and how often the class is present;
    "max_rate_over_prevalence": the largest positive_rate / prevalence over the classes with
    positives (a finding answered "yes" on every image has 1 / prevalence).
  "image_mean_share": the share of the score variance (after removing per-class means) that one
    mean per image carries; 1/K for independent classes, near 1 for an abnormality score.
Per-example arrays recorded (and saved by the runner): scores, positive, counted, askable, classes,
prior_log_odds and decision_offset ([K]; examples saved before the offset existed decide on their
prior_log_odds, those saved before the prior on the logit alone).
"""

import warnings

import numpy as np
from absl import logging

from clipmed.evaluators import findings, metrics, prompt_sets
from clipmed.evaluators.base import EvalContext, Metric
from clipmed.report import chexpert


def binary_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Labeler values -> (positive, counted) [N, K] bools: 1 positive; 0/NaN negative; -1 excluded."""
  labels = np.asarray(labels, dtype=np.float32)
  return labels == chexpert.POSITIVE, labels != chexpert.UNCERTAIN


def warn_undefined(positive: np.ndarray, counted: np.ndarray, classes: list[str]) -> None:
  """Logs the classes whose AUROC is undefined (no counted positives or negatives)."""
  for k, name in enumerate(classes):
    if not (np.any(positive[:, k] & counted[:, k]) and np.any(~positive[:, k] & counted[:, k])):
      logging.warning("AUROC of %r is undefined on this split (no positives or no negatives); "
                      "reported as NaN and left out of mean_auroc", name)


def auroc_statistics(positive: np.ndarray, counted: np.ndarray, scores: np.ndarray,
                     classes: list[str]) -> metrics.StatFn:
  """Per-class AUROCs and their mean as weighted statistics (metrics.bootstrap pairs them).

  Args:
    positive: [N, K] bool ground truth.
    counted: [N, K] bool; False leaves a study out of that class's AUROC.
    scores: [N, K] higher = more likely positive.
    classes: the K class names.

  Returns:
    w [R, N] -> {"auroc/<slug>": [R], ..., "mean_auroc": [R]}; the mean is over the classes
    defined on the whole split.
  """
  defined = [k for k in range(len(classes))
             if np.any(positive[:, k] & counted[:, k]) and np.any(~positive[:, k] & counted[:, k])]

  def stat_fn(w):
    out = {}
    per_class = []
    for k, name in enumerate(classes):
      value = metrics.weighted_auroc(positive[:, k], scores[:, k], w * counted[None, :, k])
      out[f"auroc/{prompt_sets.slug(name)}"] = value
      if k in defined:
        per_class.append(value)
    # nanmean of an all-NaN resample column warns; the result is NaN as intended.
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
      warnings.simplefilter("ignore", category=RuntimeWarning)
      out["mean_auroc"] = (np.nanmean(np.stack(per_class), axis=0) if per_class
                           else np.full(w.shape[0], np.nan))
    return out
  return stat_fn


def auroc_metrics(positive: np.ndarray, counted: np.ndarray, scores: np.ndarray,
                  classes: list[str], *, num_bootstrap: int, seed: int) -> dict[str, Metric]:
  """auroc_statistics with seeded bootstrap intervals. -> {"auroc/<slug>", "mean_auroc"}."""
  warn_undefined(positive, counted, classes)
  return metrics.bootstrap(auroc_statistics(positive, counted, scores, classes),
                           scores.shape[0], num_resamples=num_bootstrap, seed=seed)


def decision_statistics(scores: np.ndarray, positive: np.ndarray, counted: np.ndarray,
                        askable: np.ndarray, classes: list[str],
                        offset: np.ndarray | None = None) -> metrics.StatFn:
  """within_image, positive_rate/prevalence per class, max_rate_over_prevalence and
  image_mean_share (module docstring) as weighted statistics. Shapes as auroc_statistics;
  askable: [N, K] bool absent classes that may be compared with the present ones; offset: [K]
  prior log odds added to the scores for the yes/no decision (None: zeros)."""
  present = positive & counted
  fraction, has_pair = findings.within_image_scores(scores, present, askable)
  says_yes = prompt_sets.says_yes(scores, offset)
  rows = counted.any(axis=1)

  def stat_fn(w):
    out = {"within_image": metrics.weighted_mean(fraction, w * has_pair[None, :])}
    ratios = []
    for k, name in enumerate(classes):
      wk = w * counted[None, :, k]
      rate = metrics.weighted_mean(says_yes[:, k], wk)
      prevalence = metrics.weighted_mean(positive[:, k], wk)
      out[f"positive_rate/{prompt_sets.slug(name)}"] = rate
      out[f"prevalence/{prompt_sets.slug(name)}"] = prevalence
      with np.errstate(invalid="ignore", divide="ignore"):
        ratios.append(np.where(prevalence > 0, rate / prevalence, np.nan))
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN resample columns
      out["max_rate_over_prevalence"] = np.nanmax(np.stack(ratios), axis=0)
    out["image_mean_share"] = findings.image_mean_share(scores, w * rows[None, :])
    return out
  return stat_fn


class ZeroShot(prompt_sets.PromptTask):
  """Zero-shot AUROC per class from prompt sets, and whether the decisions tell findings apart."""
  task = "zero_shot"
  required_fields = ("prompts", "classes", "where")

  @staticmethod
  def statistics(examples):
    classes = [str(c) for c in examples["classes"]]
    scores, positive, counted = examples["scores"], examples["positive"], examples["counted"]
    aurocs = auroc_statistics(positive, counted, scores, classes)
    if len(classes) < 2:
      return aurocs
    decisions = decision_statistics(scores, positive, counted, examples["askable"], classes,
                                    prompt_sets.recorded_offset(examples))
    return lambda w: {**aurocs(w), **decisions(w)}

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    where = dict(self.config.where)
    columns = ctx.columns(self.classes, f"config.evals.{self.name}.classes")
    conditions = ctx.columns(list(where), f"config.evals.{self.name}.where")
    data = ctx.split(self.config.split)
    logits = prompt_sets.prompt_logits(ctx, data.image, self.prompts, self.classes)  # [N, K]
    positive, counted = binary_targets(data.labels[:, columns])

    def kept(labels):
      keep = np.ones(labels.shape[0], bool)
      for column, value in zip(conditions, where.values()):
        keep &= labels[:, column] == float(value)
      return keep
    counted &= kept(data.labels)[:, None]
    askable = findings.askable_absent(positive & counted, ~positive & counted, self.classes)
    examples = dict(scores=logits, positive=positive, counted=counted, askable=askable,
                    labels=data.labels[:, columns], classes=np.asarray(self.classes))
    # A single class has no decision metrics (statistics): no prior needed.
    examples.update(self.decision(ctx, columns, kept) if len(self.classes) > 1 else
                    {"prior_log_odds": np.zeros(1), "decision_offset": np.zeros(1)})
    ctx.record(self, data, examples)
    warn_undefined(positive, counted, self.classes)
    return metrics.bootstrap(self.statistics(examples), data.num_studies,
                             num_resamples=self.config.num_bootstrap, seed=ctx.seed)
