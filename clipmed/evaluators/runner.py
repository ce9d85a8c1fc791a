"""Runs the configured evaluations of one checkpoint and writes their results.

    runner = Runner(config.evals, dataset="synth_cxr", seed=config.eval_seed,
                    iterate_split=iterate_split, split_metadata=split_metadata)
    results = runner.run(step, embed_images=..., embed_texts=..., logit_scale=s)
    runner.write(workdir, results, step)              # results.json, results.md
    writer.write_scalars(step, runner.scalars(results))

The runner never loads data or models itself: the caller passes callables. Each split a task needs
is embedded once per `run` (one checkpoint) and shared by all tasks; a split's reports are embedded
only when a task uses them; text embeddings (reports, prompts, CXR-Align alternatives) are cached
per distinct text within a run. Split metadata does not
depend on the checkpoint and is fetched once per runner.
"""

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from clipmed import errors
from clipmed.evaluators import EVALUATORS
from clipmed.evaluators.base import EvalContext, Evaluator, Metric, SplitData
from clipmed.normalize import l2_normalize
from clipmed.report import chexpert

# iterate_split(split) -> host batches {"image": float32 [B, H, W, C], "valid": bool [B]}.
IterateSplit = Callable[[str], Iterable[Mapping[str, np.ndarray]]]
# split_metadata(split) -> {"reports": [N] str, "labels": [N, 14], "study_ids": [N] str,
#                           "extras": {key: [N] list}} (extras optional).
SplitMetadata = Callable[[str], Mapping[str, Any]]


def _check_metadata(meta: Mapping[str, Any], dataset: str, split: str) -> dict[str, Any]:
  """Validates and normalises the metadata of one split; errors name the field and the fix."""
  where = f"split_metadata({split!r}) of dataset {dataset!r}"
  missing = [k for k in ("reports", "labels", "study_ids") if k not in meta]
  if missing:
    raise ValueError(f"{where} lacks {missing}; it must return a dict with reports, labels, "
                     "study_ids and optionally extras")
  reports = [str(r) for r in meta["reports"]]
  n = len(reports)
  labels = np.asarray(meta["labels"], dtype=np.float32)
  if labels.shape != (n, chexpert.NUM_CATEGORIES):
    raise ValueError(f"{where}: labels have shape {labels.shape}, expected "
                     f"({n}, {chexpert.NUM_CATEGORIES}) for {n} reports")
  study_ids = [str(s) for s in meta["study_ids"]]
  if len(study_ids) != n:
    raise ValueError(f"{where}: {len(study_ids)} study_ids for {n} reports")
  extras = dict(meta.get("extras") or {})
  for key, values in extras.items():
    if len(values) != n:
      raise ValueError(f"{where}: extras[{key!r}] has {len(values)} entries for {n} studies; "
                       "extras must hold one entry per study (None where not applicable)")
  return dict(reports=reports, labels=labels, study_ids=study_ids, extras=extras)


def embed_split_images(batches: Iterable[Mapping[str, np.ndarray]],
                       embed_images: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
  """Embeds every valid image of a split in order. -> [N, D] L2-normalised float32."""
  parts = []
  for batch in batches:
    emb = np.asarray(embed_images(batch["image"]))                      # [B, D]
    valid = np.asarray(batch.get("valid", np.ones(emb.shape[0], bool)), dtype=bool)
    parts.append(emb[valid])
  if not parts:
    return np.zeros((0, 0), np.float32)
  return l2_normalize(np.concatenate(parts))


def build_evaluators(evals_config: ml_collections.ConfigDict,
                     registry: Mapping[str, type[Evaluator]] | None = None
                     ) -> dict[str, Evaluator]:
  """One Evaluator per config.evals entry; raises ConfigError for a bad entry.

  Args:
    evals_config: config.evals.
    registry: task name -> Evaluator class; defaults to clipmed.evaluators.EVALUATORS.
  """
  registry = EVALUATORS if registry is None else registry
  out = {}
  for name, cfg in evals_config.items():
    if "task" not in cfg or cfg.task not in registry:
      raise errors.ConfigError(f"config.evals.{name}.task={cfg.get('task')!r} is not a known "
                               f"evaluation; known: {sorted(registry)}")
    if "every_steps" not in cfg or int(cfg.every_steps) < 0:
      raise errors.ConfigError(f"config.evals.{name}.every_steps must be >= 0 (0 = only after "
                               "training)")
    out[name] = registry[cfg.task](cfg, name)
  return out


class Runner:
  """Evaluates checkpoints on one dataset with the tasks of `config.evals`."""

  def __init__(self, evals_config: ml_collections.ConfigDict, *, dataset: str, seed: int,
               iterate_split: IterateSplit, split_metadata: SplitMetadata,
               evaluators: Mapping[str, type[Evaluator]] | None = None):
    """Builds every configured evaluator (so config mistakes surface before training).

    Args:
      evals_config: config.evals; one entry per evaluation, each with a `task` field naming a
        key of `evaluators` plus that task's fields (split, every_steps, num_bootstrap, ...).
        The entry name is the result-key prefix (by convention equal to the task name).
      dataset: dataset name, the middle part of the result keys.
      seed: config.eval_seed; seeds bootstraps, subsets and sampling.
      iterate_split: split name -> iterable of host batches {"image": [B, H, W, C] float32,
        "valid": [B] bool}, the split's studies in metadata order, padding rows marked invalid.
        In a multi-process run every process must see all N studies (or embed_images must
        gather them).
      split_metadata: split name -> {"reports": [N] str, "labels": [N, 14] labeler values,
        "study_ids": [N] str, "extras": {key: [N] list}}; see the task modules for extras keys.
      evaluators: task name -> Evaluator class; defaults to clipmed.evaluators.EVALUATORS.
    """
    self.dataset = dataset
    self.seed = int(seed)
    self._iterate_split = iterate_split
    self._split_metadata = split_metadata
    self._metadata: dict[str, dict[str, Any]] = {}
    self.evaluators = build_evaluators(evals_config, evaluators)

  def due(self, step: int) -> list[str]:
    """Names of the periodic evaluations (every_steps > 0) due at `step`."""
    return [name for name, ev in self.evaluators.items()
            if ev.config.every_steps > 0 and step > 0 and step % ev.config.every_steps == 0]

  def metadata(self, split: str) -> dict[str, Any]:
    """The checked metadata of a split (fetched once)."""
    if split not in self._metadata:
      self._metadata[split] = _check_metadata(self._split_metadata(split), self.dataset, split)
    return self._metadata[split]

  def _load_split(self, embed_images) -> Callable[[EvalContext, str], SplitData]:
    def load(ctx: EvalContext, split: str) -> SplitData:
      start = time.perf_counter()
      meta = self.metadata(split)
      image = embed_split_images(self._iterate_split(split), embed_images)
      n = len(meta["reports"])
      if image.shape[0] != n:
        raise ValueError(f"iterate_split({split!r}) of {self.dataset!r} yielded {image.shape[0]} "
                         f"valid images but split_metadata has {n} studies; both must list the "
                         "same studies in the same order (mark padding rows valid=False)")
      logging.info("eval: embedded the %d images of %s/%s in %.1f s", n, self.dataset, split,
                   time.perf_counter() - start)

      def embed_reports(reports):
        start = time.perf_counter()
        report = ctx.encode_text(reports)
        logging.info("eval: embedded the reports of %s/%s (%d distinct) in %.1f s",
                     self.dataset, split, len(set(reports)), time.perf_counter() - start)
        return report

      return SplitData(dataset=self.dataset, split=split, image=image, labels=meta["labels"],
                       reports=meta["reports"], study_ids=meta["study_ids"],
                       extras=meta["extras"], embed_reports=embed_reports)
    return load

  def context(self, *, embed_images: Callable[[np.ndarray], np.ndarray],
              embed_texts: Callable[[list[str]], np.ndarray], logit_scale: float) -> EvalContext:
    """A fresh evaluation context for one checkpoint (embeddings are cached inside it)."""
    return EvalContext(dataset=self.dataset, logit_scale=float(logit_scale), seed=self.seed,
                       load_split=self._load_split(embed_images), embed_texts=embed_texts)

  def run(self, step: int, *, embed_images: Callable[[np.ndarray], np.ndarray],
          embed_texts: Callable[[list[str]], np.ndarray], logit_scale: float,
          only_due: bool = False) -> dict[str, Metric]:
    """Evaluates one checkpoint.

    Args:
      step: training step of the checkpoint (for logging and `only_due`).
      embed_images: [B, H, W, C] float32 -> [B, D] image embeddings.
      embed_texts: list of M texts -> [M, D] text embeddings (the callable batches).
      logit_scale: the model's logit scale as a Python float.
      only_due: run only the periodic evaluations due at `step` (see `due`); else run all.

    Returns:
      {"<name>/<dataset>/<metric>": Metric}, evaluations in the iteration order of config.evals.
    """
    names = self.due(step) if only_due else list(self.evaluators)
    ctx = self.context(embed_images=embed_images, embed_texts=embed_texts,
                       logit_scale=logit_scale)
    results: dict[str, Metric] = {}
    for name in names:
      start = time.perf_counter()
      metrics = self.evaluators[name].evaluate(ctx)
      for metric, value in metrics.items():
        results[f"{name}/{self.dataset}/{metric}"] = value
      logging.info("eval %s/%s at step %d: %d metrics in %.2f s", name, self.dataset, step,
                   len(metrics), time.perf_counter() - start)
    return results

  @staticmethod
  def scalars(results: Mapping[str, Metric]) -> dict[str, float]:
    """{key: value} for a clu metric writer (intervals are in results.json)."""
    return {key: float(m.value) for key, m in results.items()}

  @staticmethod
  def write(workdir: str, results: Mapping[str, Metric], step: int) -> tuple[str, str]:
    """Writes DIR/results.json and DIR/results.md (overwriting); returns their paths.

    results.json: {key: {"value": float|null, "ci_low": float|null, "ci_high": float|null}}
    (null for NaN, an undefined metric). results.md: one table per evaluation with intervals.
    Call it on one process only.
    """
    os.makedirs(workdir, exist_ok=True)
    json_path = os.path.join(workdir, "results.json")
    md_path = os.path.join(workdir, "results.md")
    payload = {key: {"value": _json_float(m.value), "ci_low": _json_float(m.ci_low),
                     "ci_high": _json_float(m.ci_high)} for key, m in results.items()}
    with open(json_path, "w", encoding="utf-8") as f:
      json.dump(payload, f, indent=1)
    with open(md_path, "w", encoding="utf-8") as f:
      f.write(markdown_table(results, step))
    return json_path, md_path


def _json_float(x: float) -> float | None:
  return None if math.isnan(x) else float(x)


def _fmt(x: float) -> str:
  return "n/a" if math.isnan(x) else f"{x:.3f}"


def markdown_table(results: Mapping[str, Metric], step: int) -> str:
  """A readable Markdown report: one table per (evaluation, dataset), values with 95% CIs."""
  lines = [f"# Evaluation results at step {step}", "",
           "Values with seeded 95% bootstrap confidence intervals; `chance@k` and `chance` are the "
           "random-ranking rates (no interval).", ""]
  groups: dict[tuple[str, str], list[tuple[str, Metric]]] = {}
  for key, m in results.items():
    name, dataset, metric = key.split("/", 2)
    groups.setdefault((name, dataset), []).append((metric, m))
  for (name, dataset), rows in groups.items():
    lines += [f"## {name} ({dataset})", "", "| metric | value | 95% CI |", "|---|---:|---|"]
    for metric, m in rows:
      if metric.split("/")[-1].startswith("chance"):
        ci = "-"
      elif math.isnan(m.ci_low) or math.isnan(m.ci_high):
        ci = "n/a"
      else:
        ci = f"[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"
      lines.append(f"| {metric} | {_fmt(m.value)} | {ci} |")
    lines.append("")
  return "\n".join(lines)
