"""Adversarial (ProbMed-style) question pairs from the zero-shot prompt sets.

Config fields (config.evals.<name>):
  task="adversarial", split="test", every_steps=0, num_bootstrap=1000,
  prompts="chexpert"   bundled prompt set name or a .json path (see prompt_sets)
  classes=[...]         CheXpert categories that questions may ask about
  prior="train"         the split whose class rates are the prior of the yes/no answers, or
                        "none" (prompt_sets: why a prior)
  calibrate=True        the answers' offset is fitted on that split's images (prompt_sets); False:
                        the prior log odds alone

For every study with at least one present class (labeler value 1) and one absent class (0 or not
mentioned; uncertain classes are never asked about; an ancestor of a present class in the CheXpert
hierarchy is not asked about as absent, see findings.py) the seeded choice picks one of each. The
model answers "yes" to "is <class> there?" when the class's zero-shot logit plus its decision
offset (the prior log odds, or the calibrated offset) is above 0 (with prior="none": when its
positive prompts beat its negative prompts). It is
right on the present class when it answers "yes", on the absent one when it answers "no"; a study
counts as correct only when both answers are right.
Metrics: "accuracy" (both right), "positive_accuracy", "negative_accuracy" (each question alone),
with intervals, and two yardsticks:
  "shuffled_accuracy" (and shuffled_positive_accuracy, shuffled_negative_accuracy): the same
    questions answered with another image's yes/no pattern, i.e. the model's own answer rates
    without the image's content. Exact expectation over the other images (no sampling), with an
    interval. A model that answers every image alike (an abnormality score, always "yes") scores
    about as well as this baseline; "accuracy_over_shuffled" is the paired difference.
  "chance" (0.25): two independent fair coin flips; a constant answerer scores 0, so this is
    not the bar a model must clear, the shuffled baseline is.
Per-example arrays recorded: scores, eligible, pos_class, neg_class, labels, classes,
prior_log_odds and decision_offset ([K]; as zero_shot's).
"""

import numpy as np
from absl import logging

from clipmed.evaluators import findings, metrics, prompt_sets
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


def shuffled_rates(hit: np.ndarray, question: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Per weight row and study i: the weighted fraction of the *other* studies j whose answers
  would be right on study i's question.

  Args:
    hit: [N, Q] bool, hit[j, q]: study j's answers are right on question q.
    question: [N] int, study i's question q_i.
    w: [R, N] study weights.

  Returns:
    [R, N] float64; NaN where no other study has weight.
  """
  hit = hit.astype(np.float64)
  pooled = (w @ hit)[:, question]                                      # [R, N]
  own = hit[np.arange(hit.shape[0]), question]                         # [N]
  others = w.sum(axis=1, keepdims=True) - w                            # [R, N]
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(others > 0, (pooled - w * own[None, :]) / others, np.nan)


class Adversarial(prompt_sets.PromptTask):
  """Paired positive/negative questions; right only when both are answered right."""
  task = "adversarial"

  @staticmethod
  def statistics(examples):
    eligible = examples["eligible"].astype(bool)
    pos_class, neg_class = examples["pos_class"], examples["neg_class"]
    yes = prompt_sets.says_yes(examples["scores"], prompt_sets.recorded_offset(examples))
    n, k = yes.shape
    rows = np.arange(n)
    pos_right, neg_right = yes[rows, pos_class], ~yes[rows, neg_class]
    both = pos_right & neg_right
    # Another study's answers to every (present, absent) question pair: [N, K * K].
    both_hit = (yes[:, :, None] & ~yes[:, None, :]).reshape(n, k * k)
    pair = pos_class * k + neg_class

    def stat_fn(w):
      we = w * eligible[None, :]
      out = {"accuracy": metrics.weighted_mean(both, we),
             "positive_accuracy": metrics.weighted_mean(pos_right, we),
             "negative_accuracy": metrics.weighted_mean(neg_right, we)}
      shuffled = {"shuffled_accuracy": shuffled_rates(both_hit, pair, w),
                  "shuffled_positive_accuracy": shuffled_rates(yes, pos_class, w),
                  "shuffled_negative_accuracy": shuffled_rates(~yes, neg_class, w)}
      total = we.sum(axis=1)
      with np.errstate(invalid="ignore", divide="ignore"):
        for name, rate in shuffled.items():
          out[name] = np.where(total > 0, np.nansum(we * rate, axis=1) / total, np.nan)
      out["accuracy_over_shuffled"] = out["accuracy"] - out["shuffled_accuracy"]
      return out
    return stat_fn

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    data = ctx.split(self.config.split)
    logits = prompt_sets.prompt_logits(ctx, data.image, self.prompts, self.classes)  # [N, K]
    columns = ctx.columns(self.classes, f"config.evals.{self.name}.classes")
    labels = data.labels[:, columns]
    present = labels == chexpert.POSITIVE
    absent = findings.askable_absent(
        present, (labels == chexpert.NEGATIVE) | np.isnan(labels), self.classes)
    eligible, pos_class, neg_class = pick_pairs(present, absent, np.random.default_rng(ctx.seed))
    logging.info("adversarial: %d of %d studies have a present and an absent class",
                 int(eligible.sum()), data.num_studies)
    examples = dict(scores=logits, eligible=eligible, pos_class=pos_class, neg_class=neg_class,
                    labels=labels, classes=np.asarray(self.classes),
                    **self.decision(ctx, columns))
    ctx.record(self, data, examples)
    results = metrics.bootstrap(self.statistics(examples), data.num_studies,
                                num_resamples=self.config.num_bootstrap, seed=ctx.seed)
    results["chance"] = metrics.constant(0.25)
    return results
