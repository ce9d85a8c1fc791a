"""Zero-shot multi-class accuracy: which of K classes is the image's one finding?

Config fields (config.evals.<name>):
  task="zero_shot_multiclass", dataset="", split="test", every_steps=0, num_bootstrap=1000,
  prompts="chexpert"     bundled prompt set name or a .json path (see prompt_sets)
  classes=[...]          the K candidate classes (the dataset's class names)

The protocol of CheXpert 5x200 (GLoRIA, MedCLIP): every evaluated image has exactly one positive
class among the K; the prediction is the class whose positive prompts are most similar to the image
on average (mean cosine similarity; the negative prompts play no part, they describe absence).
The same rule serves multi-label datasets (ChestX-ray14, VinDr-CXR): only the images with exactly
one positive (1) among the K classes are evaluated, and an image uncertain (-1) in any of the K is
left out; the number evaluated is reported as "num_images". Metrics: "accuracy" with a bootstrap
interval over the evaluated images, "recall/<class slug>" per class, and "chance" = 1 / K.
Per-example arrays recorded: scores [N, K], truth, evaluated, labels, classes.
"""

import numpy as np
from absl import logging

from clipmed.evaluators import metrics, prompt_sets
from clipmed.evaluators.base import EvalContext, Metric
from clipmed.report import chexpert


def single_label_rows(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[N, K] labeler values -> (rows with exactly one positive and no uncertain [N] bool, the
  positive class of each row [N] int, meaningful where the first is True)."""
  positive = labels == chexpert.POSITIVE
  uncertain = labels == chexpert.UNCERTAIN
  evaluated = (positive.sum(axis=1) == 1) & ~uncertain.any(axis=1)
  return evaluated, np.argmax(positive, axis=1)


class ZeroShotMulticlass(prompt_sets.PromptTask):
  """Top-1 accuracy over K classes from the positive prompts' similarities."""
  task = "zero_shot_multiclass"

  @staticmethod
  def statistics(examples):
    truth, evaluated = examples["truth"], examples["evaluated"].astype(bool)
    correct = np.argmax(examples["scores"], axis=1) == truth

    def stat_fn(w):
      w = w * evaluated[None, :]
      out = {"accuracy": metrics.weighted_mean(correct, w)}
      for k, name in enumerate(examples["classes"]):
        out[f"recall/{prompt_sets.slug(str(name))}"] = metrics.weighted_mean(
            correct, w * (truth == k)[None, :])
      return out
    return stat_fn

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    columns = ctx.columns(self.classes, f"config.evals.{self.name}.classes")
    data = ctx.split(self.config.split)
    evaluated, truth = single_label_rows(data.labels[:, columns])
    scores = np.stack([
        data.image.astype(np.float64) @ ctx.encode_text(
            list(self.prompts[c].positive)).astype(np.float64).mean(axis=0)
        for c in self.classes], axis=1)                                  # [N, K]
    logging.info("zero_shot_multiclass: %d of %d images of %s/%s have exactly one of the %d "
                 "classes", int(evaluated.sum()), data.num_studies, data.dataset, data.split,
                 len(self.classes))
    examples = dict(scores=scores, truth=truth, evaluated=evaluated,
                    labels=data.labels[:, columns], classes=np.asarray(self.classes))
    ctx.record(self, data, examples)
    results = metrics.bootstrap(self.statistics(examples), data.num_studies,
                                num_resamples=self.config.num_bootstrap, seed=ctx.seed)
    results["chance"] = metrics.constant(1.0 / len(self.classes))
    results["num_images"] = metrics.constant(float(evaluated.sum()))
    return results
