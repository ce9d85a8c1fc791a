"""TensorBoard beyond scalars, written through clu's metric writers at each evaluation.

    summaries.write_eval_summaries(writer, step, config=config, dataset=s.dataset, model=s.model,
                                   embedder=embedder, params=state.params, results=results)

What it writes, from the first config.eval_summaries.num_examples studies of the split
config.eval_summaries.split (the same studies at every evaluation):
  eval_summaries/images/samples           a few of them (num_images), as the model sees them
  eval_summaries/images/logits            s * I T^T of the sample (image rows, report columns),
                                          min-max grey
  eval_summaries/images/targets/<stream>  the soft-label targets of each weighted stream (text:
                                          the report embeddings' self-similarity; clinical: the
                                          label vectors'), row-normalised as the loss uses them
                                          (docs/METHOD.md Eq. 4-5)
  eval_summaries/images/roc/<class>       zero-shot ROC curve of each class of the first zero-shot
                                          evaluation, over the first roc_examples studies
  eval_summaries/text/samples             each sample's study id, report and hard negative
  eval_summaries/text/auroc_table         per-class zero-shot AUROC with 95% CI (this evaluation)
  eval_summaries/histograms/{logit_scale, logits, image_norm, text_norm}  (the norms are the
                                          embeddings' before L2 normalisation)
The report-graph stream has no target picture here (it needs the graph encoder's inputs).
"""

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageDraw

from clipmed import errors, losses
from clipmed.evaluators import metrics as metrics_lib
from clipmed.evaluators import prompt_sets
from clipmed.evaluators.base import EvalContext, Metric
from clipmed.normalize import l2_normalize
from clipmed.report import chexpert

PREFIX = "eval_summaries"
_CELL = 8      # pixels per matrix cell in the matrix images
_ROC_SIZE = 160


def _matrix_image(matrix: np.ndarray) -> np.ndarray:
  """[R, C] -> float32 [R * _CELL, C * _CELL, 1] in [0, 1] (min-max; constant -> 0)."""
  m = np.asarray(matrix, np.float32)
  lo, hi = float(m.min()), float(m.max())
  unit = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
  return np.kron(unit, np.ones((_CELL, _CELL), np.float32))[..., None]


def roc_points(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rates, true positive rates) of the ROC curve, from (0, 0) to (1, 1); tied
  scores form one step."""
  order = np.argsort(-scores, kind="stable")
  pos, s = positive[order].astype(np.float64), scores[order]
  last_of_tie = np.r_[s[1:] != s[:-1], True]
  tp, fp = np.cumsum(pos)[last_of_tie], np.cumsum(1 - pos)[last_of_tie]
  return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def roc_image(fpr: np.ndarray, tpr: np.ndarray, title: str) -> np.ndarray:
  """A ROC curve drawn with PIL: uint8 [_ROC_SIZE, _ROC_SIZE, 3] (chance diagonal grey)."""
  size, margin = _ROC_SIZE, 14
  canvas = Image.new("RGB", (size, size), "white")
  draw = ImageDraw.Draw(canvas)
  side = size - 2 * margin

  def xy(x, y):
    return margin + x * side, size - margin - y * side

  draw.rectangle([xy(0, 1), xy(1, 0)], outline="black")
  draw.line([xy(0, 0), xy(1, 1)], fill=(170, 170, 170))
  draw.line([xy(x, y) for x, y in zip(fpr, tpr)], fill=(200, 30, 30), width=2)
  draw.text((margin, 1), title, fill="black")
  return np.asarray(canvas)


def _raw_rows(dataset, split: str, n: int) -> list[Mapping[str, Any]]:
  from input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  raw = pipeline.without_image_decoding(dataset.source(split))
  return [raw[i] for i in range(min(n, len(raw)))]


def _hard_negative(row: Mapping[str, Any]) -> str:
  from input_pipeline import extras  # pylint: disable=g-import-not-at-top
  if "neg_report" not in row or extras.as_text(row.get("neg_source", "none")) == "none":
    return "(none)"
  return extras.as_text(row["neg_report"])


def _zero_shot_eval(config) -> Any | None:
  """The first zero-shot evaluation on the training dataset, if any."""
  for name, cfg in config.evals.items():
    if cfg.task == "zero_shot" and cfg.dataset in ("", config.data.name):
      return name, cfg
  return None


def _auroc_table(results: Mapping[str, Metric], name: str) -> str | None:
  rows = [(key.split("/auroc/", 1)[1], m) for key, m in results.items()
          if key.startswith(f"{name}/") and "/auroc/" in key]
  if not rows:
    return None
  lines = [f"Zero-shot AUROC per class ({name}, the whole split, 95% bootstrap CI)", "",
           "| class | AUROC | 95% CI |", "|---|---:|---|"]
  for cls, m in rows:
    ci = "n/a" if math.isnan(m.ci_low) else f"[{m.ci_low:.3f}, {m.ci_high:.3f}]"
    lines.append(f"| {cls} | {'n/a' if math.isnan(m.value) else f'{m.value:.3f}'} | {ci} |")
  return "\n".join(lines)


def _raw_norms(model, params, images, ids, mask) -> tuple[np.ndarray, np.ndarray]:
  """Norms of the image and text projections before L2 normalisation: ([N], [N])."""
  from clipmed.models.bert import pool  # pylint: disable=g-import-not-at-top

  def norms(params, images, ids, mask):
    def fn(m):
      img = m.image_projection(m.image_encoder(images, train=False))
      txt = m.text_projection(pool(m.text_encoder(ids, mask, train=False), mask,
                                   m.config.text.pooling))
      return (jax.numpy.linalg.norm(img.astype(np.float32), axis=-1),
              jax.numpy.linalg.norm(txt.astype(np.float32), axis=-1))
    return model.apply({"params": params}, method=fn)

  image_norm, text_norm = jax.jit(norms)(params, images, ids, mask)
  return np.asarray(image_norm), np.asarray(text_norm)


def check_config(summaries_config) -> None:
  """Raises ConfigError for config.eval_summaries values that cannot work (before any work)."""
  for key in ("num_examples", "num_images", "roc_examples"):
    if int(summaries_config[key]) < 1:
      raise errors.ConfigError(f"config.eval_summaries.{key}={summaries_config[key]} must be >= 1")
  if int(summaries_config.roc_examples) < int(summaries_config.num_examples):
    raise errors.ConfigError("config.eval_summaries.roc_examples must be >= num_examples (the "
                             "sample is the start of the ROC studies)")


def write_eval_summaries(writer, step: int, *, config, dataset, model, embedder, params,
                         results: Mapping[str, Metric]) -> None:
  """Writes the pictures, texts and histograms of the module docstring for one evaluation.

  Args:
    writer: a clu metric writer.
    step: the training step.
    config: the run's config (config.eval_summaries, config.loss, config.evals, config.data).
    dataset: the training input_pipeline.Dataset.
    model: the CLIPModel; params its parameters.
    embedder: the evaluation's clipmed.evaluators.embedder.Embedder.
    results: this evaluation's results (for the AUROC table).
  """
  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top
  cfg = config.eval_summaries
  if not cfg.enabled or not dataset.has_reports:
    return
  split = cfg.split
  if split not in dataset.splits:
    raise errors.ConfigError(f"config.eval_summaries.split={split!r}: {dataset.name} has the "
                             f"splits {list(dataset.splits)}")
  meta = dataset.split_metadata(split)
  total = len(meta["reports"])
  n_roc = min(int(cfg.roc_examples), total)
  n = min(int(cfg.num_examples), n_roc)
  if n == 0:
    return
  bound = embedder.bind(params)
  spec = batch_lib.BatchSpec(image_size=int(config.data.image_size),
                             channels=int(config.data.channels),
                             max_text_length=int(config.data.max_text_length),
                             num_classes=len(dataset.class_names), text=False)
  pixels, embeddings, seen = [], [], 0
  for batch in dataset.iterate_split(split, spec=spec, batch_size=int(config.eval_batch_size)):
    valid = np.asarray(batch["valid"], bool)
    embeddings.append(np.asarray(bound["embed_images"](batch["image"]))[valid])
    if seen < n:  # keep only the pixels of the sample
      pixels.append(np.asarray(batch["image"])[valid][:n - seen])
      seen += len(pixels[-1])
    if sum(map(len, embeddings)) >= n_roc:
      break
  image = l2_normalize(np.concatenate(embeddings)[:n_roc])          # [n_roc, D]
  sample = np.concatenate(pixels)[:n]                                 # [n, S, S, C]
  reports = meta["reports"][:n]
  scale = float(bound["logit_scale"])
  ctx = EvalContext(dataset=dataset.name, logit_scale=scale, seed=0,
                    load_split=lambda c, s: None, embed_texts=bound["embed_texts"],
                    class_names=dataset.class_names)
  text = ctx.encode_text(reports)                                     # [n, D]
  logits = scale * image[:n] @ text.T                                 # [n, n]

  images = {f"{PREFIX}/images/samples": np.clip(
      sample[:int(cfg.num_images), ..., :1] * float(config.data.std) + float(config.data.mean),
      0.0, 1.0), f"{PREFIX}/images/logits": _matrix_image(logits)[None]}
  spec_loss = losses.LossSpec.from_config(config.loss, graph_enabled=config.model.graph.enabled)
  similarity = {"text": text @ text.T}
  clinical = chexpert.clinical_vector(meta["labels"][:n], class_names=dataset.class_names,
                                      uncertain_as=config.data.uncertain_as)
  similarity["clinical"] = clinical @ clinical.T
  for stream in spec_loss.streams:
    if stream in similarity:
      y = np.asarray(losses.soft_label_weights(similarity[stream],
                                               float(config.loss.thresholds[stream])))
      targets = y / np.maximum(y.sum(axis=1, keepdims=True), 1e-12)
      images[f"{PREFIX}/images/targets/{stream}"] = _matrix_image(targets)[None]

  texts = {}
  rows = _raw_rows(dataset, split, min(n, int(cfg.num_images)))
  texts[f"{PREFIX}/text/samples"] = "\n\n".join(
      f"**{i}. study {meta['study_ids'][i]}**  \nreport: {reports[i]}  \n"
      f"hard negative: {_hard_negative(row)}" for i, row in enumerate(rows))
  zero_shot = _zero_shot_eval(config)
  if zero_shot is not None:
    name, zcfg = zero_shot
    table = _auroc_table(results, name)
    if table:
      texts[f"{PREFIX}/text/auroc_table"] = table
    classes = [c for c in zcfg.classes if c in dataset.class_names]
    sets = prompt_sets.load_prompts(zcfg.prompts, classes)
    scores = prompt_sets.prompt_logits(ctx, image, sets, classes)     # [n_roc, K]
    columns = [list(dataset.class_names).index(c) for c in classes]
    labels = np.asarray(meta["labels"][:n_roc])[:, columns]
    for k, c in enumerate(classes):
      counted = labels[:, k] != chexpert.UNCERTAIN
      positive = labels[counted, k] == chexpert.POSITIVE
      if positive.all() or not positive.any():
        continue  # no curve without positives and negatives
      auc = metrics_lib.auroc(positive, scores[counted, k])
      fpr, tpr = roc_points(positive, scores[counted, k])
      images[f"{PREFIX}/images/roc/{prompt_sets.slug(c)}"] = roc_image(
          fpr, tpr, f"{c[:18]} AUC {auc:.2f} n={int(counted.sum())}")[None]

  ids, mask = embedder.tokenize(reports)
  image_norm, text_norm = _raw_norms(model, params, sample, ids, mask)
  writer.write_images(step, images)
  writer.write_texts(step, texts)
  writer.write_histograms(step, {f"{PREFIX}/histograms/logit_scale": np.array([scale]),
                                 f"{PREFIX}/histograms/logits": logits.reshape(-1),
                                 f"{PREFIX}/histograms/image_norm": image_norm,
                                 f"{PREFIX}/histograms/text_norm": text_norm})
  writer.flush()
