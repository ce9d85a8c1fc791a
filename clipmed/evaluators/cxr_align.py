"""CXR-Align: does the model prefer the true report over a minimally altered one?

Config fields (config.evals.<name>):
  task="cxr_align", split="test", every_steps=0, num_bootstrap=1000

The triplets come from the split metadata extras when it has them (lists of length N, None for
studies outside the benchmark), e.g. from a published CXR-Align file:
  "cxr_align_report":  r, the report split into one finding per sentence with temporal references
                       removed (the reference text of both tasks)
  "cxr_align_negated": r^n, r with the chosen present entity stated as absent (task A)
  "cxr_align_omitted": r^r, r with the sentences about that entity removed (task B)
Without these keys the task builds them once per split from the split's reports with
clipmed.report.hard_negatives.cxr_align_triplets (abnormal reports only; seeded with the eval
seed) and
reuses them for every later checkpoint.

For each triplet (image, r, alternative) the model is right when sim(image, r) > sim(image,
alternative) (a tie is wrong). Metrics: "task_a" and "task_b" accuracy over the studies that have
the alternative, with paired bootstrap intervals, and "chance" (0.5).
Per-example arrays recorded: has_task_a, correct_task_a, has_task_b, correct_task_b, labels.
"""

import time

import numpy as np
from absl import logging

from clipmed.evaluators import metrics
from clipmed.evaluators.base import EvalContext, Evaluator, Metric

REPORT_KEY = "cxr_align_report"
TASK_KEYS = {"task_a": "cxr_align_negated", "task_b": "cxr_align_omitted"}


def triplet_correct(ctx: EvalContext, image: np.ndarray, references: list,
                    alternatives: list, study_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """Per study: (has a triplet, the reference beats the alternative). [N] bools each.

  Raises:
    ValueError: when a study has an alternative but no reference report.
  """
  has = np.array([a is not None for a in alternatives])
  rows = np.flatnonzero(has)
  for i in rows:
    if references[i] is None:
      raise ValueError(f"study {study_ids[i]}: extras[{REPORT_KEY!r}] is None but it has a "
                       "CXR-Align alternative; give the cleaned report of every triplet")
  correct = np.zeros(len(alternatives), bool)
  if rows.size:
    ref = ctx.encode_text([references[i] for i in rows])              # [M, D]
    alt = ctx.encode_text([alternatives[i] for i in rows])            # [M, D]
    img = image[rows]                                                  # [M, D]
    correct[rows] = np.sum(img * ref, axis=1) > np.sum(img * alt, axis=1)
  return has, correct


def triplet_extras(reports: list[str], seed: int) -> dict[str, list[str | None]]:
  """Builds the three extras lists from report texts (hard_negatives.cxr_align_triplets)."""
  # Imported here: only this task needs the report-editing machinery.
  from clipmed.report import hard_negatives
  n = len(reports)
  out: dict[str, list[str | None]] = {REPORT_KEY: [None] * n}
  out.update({key: [None] * n for key in TASK_KEYS.values()})
  for triplet in hard_negatives.cxr_align_triplets(reports, seed=seed):
    i = triplet["source_row"] - 1
    out[REPORT_KEY][i] = triplet["report"]
    out[TASK_KEYS["task_a"]][i] = triplet["negated"]
    out[TASK_KEYS["task_b"]][i] = triplet["omitted"]
  return out


class CxrAlign(Evaluator):
  """CXR-Align tasks A (negated alternative) and B (omitted alternative)."""
  task = "cxr_align"
  needs_reports = True

  def __init__(self, config, name=None):
    super().__init__(config, name)
    # Triplets built from a split's reports, kept across checkpoints: (dataset, split) -> extras.
    self._built: dict[tuple[str, str], dict[str, list[str | None]]] = {}

  def _triplets(self, data, seed: int) -> dict[str, list[str | None]]:
    needed = [REPORT_KEY, *TASK_KEYS.values()]
    present = [k for k in needed if k in data.extras]
    if len(present) == len(needed):
      return {k: data.extras[k] for k in needed}
    if present:
      raise ValueError(f"the split metadata of {data.dataset}/{data.split} has the extras "
                       f"{present} but not {sorted(set(needed) - set(present))}; give all three "
                       "CXR-Align keys or none (then they are built from the reports)")
    key = (data.dataset, data.split)
    if key not in self._built:
      start = time.perf_counter()
      self._built[key] = triplet_extras(data.reports, seed)
      logging.info("cxr_align: built %d triplets from the %d reports of %s/%s in %.1f s",
                   sum(r is not None for r in self._built[key][REPORT_KEY]), data.num_studies,
                   data.dataset, data.split, time.perf_counter() - start)
    return self._built[key]

  @staticmethod
  def statistics(examples):
    def stat_fn(w):
      return {task: metrics.weighted_mean(examples[f"correct_{task}"],
                                          w * examples[f"has_{task}"][None, :])
              for task in TASK_KEYS}
    return stat_fn

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    data = ctx.split(self.config.split)
    extras = self._triplets(data, ctx.seed)
    examples = {"labels": data.labels}
    for task, key in TASK_KEYS.items():
      has, correct = triplet_correct(ctx, data.image, extras[REPORT_KEY], extras[key],
                                     data.study_ids)
      examples[f"has_{task}"], examples[f"correct_{task}"] = has, correct
      logging.info("cxr_align %s: %d triplets", task, int(has.sum()))
    ctx.record(self, data, examples)
    results = metrics.bootstrap(self.statistics(examples), data.num_studies,
                                num_resamples=self.config.num_bootstrap, seed=ctx.seed)
    results["chance"] = metrics.constant(0.5)
    return results
