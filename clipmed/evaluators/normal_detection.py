"""Normal case detection: find the one normal report among N abnormal ones.

Config fields (config.evals.<name>):
  task="normal_detection", split="test", every_steps=0, num_bootstrap=1000,
  num_abnormal=2999     abnormal candidates per query (the paper's 2,999), capped by the split

A study is normal when its binary label vector (positive or uncertain -> 1, No Finding rule) has
No Finding, i.e. nothing but support devices is positive or uncertain; every other study is
abnormal. For each normal test image the candidates are its own report and num_abnormal abnormal
reports of the split, drawn without replacement per query (seeded). It is right when its own report
has the strictly highest similarity. Metrics: "accuracy" with a bootstrap interval over the normal
studies, and "chance" = 1 / (num_abnormal + 1) with the number of candidates actually used.
Per-example arrays recorded: normal, correct, labels.
"""

import numpy as np
from absl import logging

from clipmed.evaluators import metrics
from clipmed.evaluators.base import EvalContext, Evaluator, Metric
from clipmed.evaluators.retrieval import binary_label_vectors
from clipmed.report import chexpert


def normal_mask(labels: np.ndarray, class_names=chexpert.CATEGORIES) -> np.ndarray:
  """[N, K] labeler values -> [N] bool: nothing but support devices positive or uncertain.

  Needs a "No Finding" class (CheXpert-14 datasets).
  """
  return binary_label_vectors(labels, class_names)[:, list(class_names).index("No Finding")]


class NormalDetection(Evaluator):
  """Top-1 of the own normal report against sampled abnormal reports."""
  task = "normal_detection"
  needs_reports = True
  required_fields = ("num_abnormal",)

  @staticmethod
  def statistics(examples):
    return lambda w: {"accuracy": metrics.weighted_mean(examples["correct"],
                                                        w * examples["normal"][None, :])}

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    ctx.columns(["No Finding"], f"config.evals.{self.name}")
    data = ctx.split(self.config.split)
    normal = normal_mask(data.labels, data.class_names)
    normal_rows, abnormal_rows = np.flatnonzero(normal), np.flatnonzero(~normal)
    if normal_rows.size == 0 or abnormal_rows.size == 0:
      logging.warning("normal_detection: %s/%s has %d normal and %d abnormal studies; it needs "
                      "both, reporting NaN", data.dataset, data.split, normal_rows.size,
                      abnormal_rows.size)
      nan = float("nan")
      return {"accuracy": Metric(nan, nan, nan), "chance": Metric(nan, nan, nan)}
    k = min(int(self.config.num_abnormal), abnormal_rows.size)
    if k < self.config.num_abnormal:
      logging.info("normal_detection: %d abnormal candidates per query (capped from %d by the "
                   "split)", k, self.config.num_abnormal)
    img = data.image[normal_rows]                                      # [Q, D]
    own = np.sum(img * data.report[normal_rows], axis=1)               # [Q]
    sims = img @ data.report[abnormal_rows].T                          # [Q, A]
    if k < abnormal_rows.size:
      rng = np.random.default_rng(ctx.seed)
      picks = np.argsort(rng.random(sims.shape), axis=1)[:, :k]        # [Q, k] without replacement
      sims = np.take_along_axis(sims, picks, axis=1)
    correct = np.zeros(data.num_studies, bool)
    correct[normal_rows] = own > sims.max(axis=1)
    examples = dict(normal=normal, correct=correct, labels=data.labels)
    ctx.record(self, data, examples)
    results = metrics.bootstrap(self.statistics(examples), data.num_studies,
                                num_resamples=self.config.num_bootstrap, seed=ctx.seed)
    results["chance"] = metrics.constant(1.0 / (k + 1))
    return results
