"""Zero-shot classification with positive/negative prompt sets (CheXzero style).

Config fields (config.evals.<name>):
  task="zero_shot", dataset="", split="test", every_steps=0, num_bootstrap=1000,
  prompts="chexpert"     bundled prompt set name or a path to a .json prompt file
  classes=[...]          the dataset's class names to evaluate
  where={}               keep only rows whose labels equal these values, e.g. {"Normal": 0.0}
                         for RSNA-ab (pneumonia against the other abnormal images)

Per class, the score of a study is softmax over (mean similarity to the positive prompts, mean
similarity to the negative prompts) times the logit scale; the metric is the binary AUROC.
Ground truth for a class: labeler value 1 is positive; 0 and not mentioned (NaN) are negative;
uncertain (-1) studies are left out of that class's AUROC (they are neither a clean positive nor a
clean negative; they still count for the other classes). A class without positives or without
negatives on the split gets NaN and is left out of "mean_auroc", the mean over the configured
classes. Metrics: "auroc/<class slug>" (e.g. auroc/pleural_effusion) and "mean_auroc", each with a
bootstrap interval over studies (the mean's resamples are paired across classes).
"""

import warnings

import numpy as np
from absl import logging

from clipmed.evaluators import metrics, prompt_sets
from clipmed.evaluators.base import EvalContext, Metric
from clipmed.report import chexpert


def binary_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Labeler values -> (positive, counted) [N, K] bools: 1 positive; 0/NaN negative; -1 excluded."""
  labels = np.asarray(labels, dtype=np.float32)
  return labels == chexpert.POSITIVE, labels != chexpert.UNCERTAIN


def auroc_metrics(positive: np.ndarray, counted: np.ndarray, scores: np.ndarray,
                  classes: list[str], *, num_bootstrap: int, seed: int) -> dict[str, Metric]:
  """Per-class AUROCs and their mean, with paired bootstrap intervals.

  Args:
    positive: [N, K] bool ground truth.
    counted: [N, K] bool; False leaves a study out of that class's AUROC.
    scores: [N, K] higher = more likely positive.
    classes: the K class names.
    num_bootstrap: resamples for the intervals.
    seed: bootstrap seed.

  Returns:
    {"auroc/<slug>": Metric, ..., "mean_auroc": Metric}.
  """
  n = scores.shape[0]
  defined = [k for k in range(len(classes))
             if np.any(positive[:, k] & counted[:, k]) and np.any(~positive[:, k] & counted[:, k])]
  for k in sorted(set(range(len(classes))) - set(defined)):
    logging.warning("AUROC of %r is undefined on this split (no positives or no negatives); "
                    "reported as NaN and left out of mean_auroc", classes[k])

  def stat_fn(w):
    out = {}
    per_class = []
    for k, name in enumerate(classes):
      value = metrics.weighted_auroc(positive[:, k], scores[:, k], w * counted[None, :, k])
      out[f"auroc/{prompt_sets.slug(name)}"] = value
      if k in defined:
        per_class.append(value)
    with np.errstate(invalid="ignore"):
      out["mean_auroc"] = (np.nanmean(np.stack(per_class), axis=0) if per_class
                           else np.full(w.shape[0], np.nan))
    return out

  # nanmean of an all-NaN resample column warns; the result is NaN as intended.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", category=RuntimeWarning)
    return metrics.bootstrap(stat_fn, n, num_resamples=num_bootstrap, seed=seed)


class ZeroShot(prompt_sets.PromptTask):
  """Zero-shot AUROC per class from prompt sets."""
  task = "zero_shot"
  required_fields = ("prompts", "classes", "where")

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    where = dict(self.config.where)
    columns = ctx.columns(self.classes, f"config.evals.{self.name}.classes")
    conditions = ctx.columns(list(where), f"config.evals.{self.name}.where")
    data = ctx.split(self.config.split)
    logits = prompt_sets.prompt_logits(ctx, data.image, self.prompts, self.classes)  # [N, K]
    positive, counted = binary_targets(data.labels[:, columns])
    keep = np.ones(data.num_studies, bool)
    for column, value in zip(conditions, where.values()):
      keep &= data.labels[:, column] == float(value)
    return auroc_metrics(positive, counted & keep[:, None], logits, self.classes,
                         num_bootstrap=self.config.num_bootstrap, seed=ctx.seed)
