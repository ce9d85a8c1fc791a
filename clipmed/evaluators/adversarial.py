"""Adversarial (ProbMed-style) question pairs from the zero-shot prompt sets.

Config fields (config.evals.<name>):
  task="adversarial", split="test", every_steps=0, num_bootstrap=1000,
  prompts="chexpert"   bundled prompt set name or a .json path (see prompt_sets)
  classes=[...]         CheXpert categories that questions may ask about

For every study with at least one present class (labeler value 1) and one absent class (0 or not
mentioned; uncertain classes are never asked about) the seeded choice picks one of each. The model
answers "is <present> there?" right when the present class's positive prompts beat its negative
prompts (zero-shot logit > 0), and "is <absent> there?" right when the absent class's negative
prompts win (logit < 0). A study counts as correct only when both answers are right.
Metrics: "accuracy" (both right), "positive_accuracy", "negative_accuracy" (each question alone),
and "chance" (0.25, two independent coin flips).
"""

import numpy as np
from absl import logging

from clipmed.evaluators import metrics, prompt_sets
from clipmed.evaluators.base import EvalContext, Metric
from clipmed.report import chexpert


def pick_pairs(present: np.ndarray, absent: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Uniformly picks one present and one absent class per eligible study.

  Args:
    present: [N, K] bool.
    absent: [N, K] bool.
    rng: randomness.

  Returns:
    (eligible [N] bool, present class [N] int, absent class [N] int); the classes are only
    meaningful where eligible.
  """
  keys = rng.random((2,) + present.shape)                             # [2, N, K]
  eligible = present.any(axis=1) & absent.any(axis=1)
  pos_class = np.argmax(np.where(present, keys[0], -1.0), axis=1)
  neg_class = np.argmax(np.where(absent, keys[1], -1.0), axis=1)
  return eligible, pos_class, neg_class


class Adversarial(prompt_sets.PromptTask):
  """Paired positive/negative questions; right only when both are answered right."""
  task = "adversarial"

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    data = ctx.split(self.config.split)
    logits = prompt_sets.prompt_logits(ctx, data.image, self.prompts, self.classes)  # [N, K]
    labels = data.labels[:, ctx.columns(self.classes, f"config.evals.{self.name}.classes")]
    present = labels == chexpert.POSITIVE
    absent = (labels == chexpert.NEGATIVE) | np.isnan(labels)
    eligible, pos_class, neg_class = pick_pairs(present, absent, np.random.default_rng(ctx.seed))
    rows = np.arange(data.num_studies)
    pos_right = logits[rows, pos_class] > 0
    neg_right = logits[rows, neg_class] < 0
    both = pos_right & neg_right
    logging.info("adversarial: %d of %d studies have a present and an absent class",
                 int(eligible.sum()), data.num_studies)

    def stat_fn(w):
      w = w * eligible[None, :]
      return {"accuracy": metrics.weighted_mean(both, w),
              "positive_accuracy": metrics.weighted_mean(pos_right, w),
              "negative_accuracy": metrics.weighted_mean(neg_right, w)}

    results = metrics.bootstrap(stat_fn, data.num_studies,
                                num_resamples=self.config.num_bootstrap, seed=ctx.seed)
    results["chance"] = metrics.constant(0.25)
    return results
