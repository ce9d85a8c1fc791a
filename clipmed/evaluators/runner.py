"""Runs the configured evaluations of one checkpoint, on one or several datasets.

    runner = Runner(config.evals, default_dataset="mimic_cxr", seed=config.eval_seed,
                    sources=lambda name: EvalSource(...))      # how to read each dataset
    results = runner.run(step, embed_images=..., embed_texts=..., logit_scale=s)
    runner.write(workdir, results, step)              # results.json (with "_data"), results.md,
                                                      # examples/<name>/<dataset>.npz
    writer.write_scalars(step, runner.scalars(results))

Each config.evals entry names its dataset (`dataset`, "" = the training dataset). A dataset that
cannot be opened (not prepared) is skipped with one line naming the command that prepares it; the
other evaluations run. The runner never loads data or models itself: the caller passes callables.
Each (dataset, split) a task needs is embedded once per `run` (one checkpoint) and shared by all
tasks; a split's reports are embedded only when a task uses them; text embeddings (reports,
prompts, CXR-Align alternatives) are cached per distinct text within a run. Split metadata does
not depend on the checkpoint and is fetched once per runner.

In a multi-process run every process runs the same evaluations in the same order. A source whose
iterate_split yields only this process's share of a split gives its `gather_rows`, which puts the
processes' embeddings back together (a collective), so every process evaluates all N rows and
process 0 writes the results.
"""

import dataclasses
import functools
import hashlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from clipmed import errors
from clipmed.evaluators import EVALUATORS
from clipmed.evaluators import paper
from clipmed.evaluators import results as results_lib
from clipmed.evaluators.base import EvalContext, Evaluator, Metric, SplitData
from clipmed.normalize import l2_normalize
from clipmed.report import chexpert

# iterate_split(split) -> host batches {"image": float32 [B, H, W, C], "valid": bool [B]}.
IterateSplit = Callable[[str], Iterable[Mapping[str, np.ndarray]]]
# split_metadata(split) -> {"reports": [N] str, "labels": [N, K], "study_ids": [N] str,
#                           "extras": {key: [N] list}} (extras optional).
SplitMetadata = Callable[[str], Mapping[str, Any]]

# results.md's appendix with the paper's tables (printed at the end of a paper_eval run).
PAPER_TABLES_HEADING = "## The paper's tables"


@dataclasses.dataclass
class EvalSource:
  """One dataset as the runner reads it.

  Attributes:
    iterate_split: split -> batches {"image": [B, H, W, C] float32, "valid": [B] bool}, the
      split's rows in metadata order, padding rows marked invalid; in a multi-process run either
      all N rows on every process, or (with gather_rows) this process's share, the same number
      of batches on every process.
    split_metadata: split -> {"reports", "labels" [N, K], "study_ids", "extras"}; see the task
      modules for extras keys.
    class_names: the K label classes.
    has_reports: whether the rows have report texts (tasks on reports need them).
    split_info: split -> what identifies the evaluated images ({"images", "image_id_sha256",
      ...}); by default the number of rows and the sha256 of the sorted study ids.
    gather_rows: with an iterate_split that yields this process's share: [n, ...] per-row
      results of this process (every yielded row, padding included) -> [P * n, ...] those of
      every process, in the order that, without the invalid rows, is the split's
      (input_pipeline.pipeline.gather_rows for its contiguous blocks). None: iterate_split yields
      every row.
  """
  iterate_split: IterateSplit
  split_metadata: SplitMetadata
  class_names: tuple[str, ...] = chexpert.CATEGORIES
  has_reports: bool = True
  split_info: Callable[[str], dict[str, Any]] | None = None
  gather_rows: Callable[[np.ndarray], np.ndarray] | None = None


def _check_metadata(meta: Mapping[str, Any], dataset: str, split: str,
                    num_classes: int) -> dict[str, Any]:
  """Validates and normalises the metadata of one split; errors name the field and the fix."""
  where = f"split_metadata({split!r}) of dataset {dataset!r}"
  missing = [k for k in ("reports", "labels", "study_ids") if k not in meta]
  if missing:
    raise ValueError(f"{where} lacks {missing}; it must return a dict with reports, labels, "
                     "study_ids and optionally extras")
  reports = [str(r) for r in meta["reports"]]
  n = len(reports)
  labels = np.asarray(meta["labels"], dtype=np.float32)
  if labels.shape != (n, num_classes):
    raise ValueError(f"{where}: labels have shape {labels.shape}, expected "
                     f"({n}, {num_classes}) for {n} reports")
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
                       embed_images: Callable[[np.ndarray], np.ndarray],
                       gather_rows: Callable[[np.ndarray], np.ndarray] | None = None
                       ) -> tuple[np.ndarray, int]:
  """Embeds every valid image of a split in order.

  Args:
    batches: iterate_split's batches (with gather_rows: this process's share).
    embed_images: [B, H, W, C] -> [B, D].
    gather_rows: see EvalSource.gather_rows; None when `batches` hold every row.

  Returns:
    ([N, D] L2-normalised float32 embeddings of the whole split, how many of its N rows this
    process embedded).
  """
  parts, masks = [], []
  for batch in batches:
    emb = np.asarray(embed_images(batch["image"]))                      # [B, D]
    parts.append(emb)
    masks.append(np.asarray(batch.get("valid", np.ones(emb.shape[0], bool)), dtype=bool))
  if not parts:
    return np.zeros((0, 0), np.float32), 0
  emb, valid = np.concatenate(parts), np.concatenate(masks)             # [n, D], [n]
  mine = int(valid.sum())
  if gather_rows is not None:
    emb, valid = gather_rows(emb), gather_rows(valid)                   # [P n, D], [P n]
  return l2_normalize(emb[valid]), mine


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
    if "dataset" not in cfg:
      raise errors.ConfigError(f"config.evals.{name} lacks `dataset` (\"\" = the training "
                               "dataset)")
    out[name] = registry[cfg.task](cfg, name)
  return out


class Runner:
  """Evaluates checkpoints with the tasks of `config.evals`, each on its dataset."""

  def __init__(self, evals_config: ml_collections.ConfigDict, *, default_dataset: str,
               seed: int, sources: Callable[[str], EvalSource],
               evaluators: Mapping[str, type[Evaluator]] | None = None):
    """Builds every configured evaluator and opens its dataset (before training starts).

    Args:
      evals_config: config.evals; one entry per evaluation: `task` (a key of `evaluators`),
        `dataset` ("" = default_dataset) and that task's fields (split, every_steps,
        num_bootstrap, ...). The entry name is the result-key prefix.
      default_dataset: the training dataset's name.
      seed: config.eval_seed; seeds bootstraps, subsets and sampling.
      sources: dataset name -> EvalSource; may raise clipmed.errors.DataError for a dataset
        that is not available: its evaluations are then skipped, with one line saying why.
      evaluators: task name -> Evaluator class; defaults to clipmed.evaluators.EVALUATORS.
    """
    self.seed = int(seed)
    self.evaluators: dict[str, Evaluator] = {}
    self.dataset_of: dict[str, str] = {}
    self.sources: dict[str, EvalSource] = {}
    self.skipped: dict[str, str] = {}  # evaluation name -> why
    self._metadata: dict[tuple[str, str], dict[str, Any]] = {}
    self._data_info: dict[str, dict[str, Any]] = {}
    # (evaluation name, dataset) -> per-example arrays of the last `run` (EvalContext.record).
    self._examples: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    unavailable: dict[str, str] = {}
    for name, evaluator in build_evaluators(evals_config, evaluators).items():
      dataset = evaluator.config.dataset or default_dataset
      if dataset not in self.sources and dataset not in unavailable:
        try:
          self.sources[dataset] = sources(dataset)
        except errors.DataError as e:
          unavailable[dataset] = str(e)
          # Printed, not logged: a user must see it at any verbosity, once.
          print(f"warning: skipping the evaluations on {dataset}: {e}", file=sys.stderr,
                flush=True)
      if dataset in unavailable:
        self.skipped[name] = unavailable[dataset]
        continue
      if evaluator.needs_reports and not self.sources[dataset].has_reports:
        raise errors.ConfigError(f"config.evals.{name} ({evaluator.task}) needs report texts, "
                                 f"but {dataset} has none; evaluate it on a report dataset")
      self.evaluators[name] = evaluator
      self.dataset_of[name] = dataset

  def due(self, step: int) -> list[str]:
    """Names of the periodic evaluations (every_steps > 0) due at `step`."""
    return [name for name, ev in self.evaluators.items()
            if ev.config.every_steps > 0 and step > 0 and step % ev.config.every_steps == 0]

  def metadata(self, dataset: str, split: str) -> dict[str, Any]:
    """The checked metadata of a split (fetched once)."""
    key = (dataset, split)
    if key not in self._metadata:
      source = self.sources[dataset]
      self._metadata[key] = _check_metadata(source.split_metadata(split), dataset, split,
                                            len(source.class_names))
    return self._metadata[key]

  def _split_labels(self, dataset: str, split: str) -> np.ndarray:
    return self.metadata(dataset, split)["labels"]

  def _split_info(self, dataset: str, split: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    source = self.sources[dataset]
    if source.split_info is not None:
      return dict(source.split_info(split))
    ids = "\n".join(sorted(meta["study_ids"])).encode("utf-8")
    return {"images": len(meta["study_ids"]), "study_id_sha256": hashlib.sha256(ids).hexdigest()}

  def _load_split(self, dataset: str, embed_images) -> Callable[[EvalContext, str], SplitData]:
    source = self.sources[dataset]

    def load(ctx: EvalContext, split: str) -> SplitData:
      start = time.perf_counter()
      meta = self.metadata(dataset, split)
      image, mine = embed_split_images(source.iterate_split(split), embed_images,
                                       source.gather_rows)
      n = len(meta["reports"])
      if image.shape[0] != n:
        raise ValueError(f"iterate_split({split!r}) of {dataset!r} yielded {image.shape[0]} "
                         f"valid images but split_metadata has {n} rows; both must list the "
                         "same rows in the same order (mark padding rows valid=False)")
      logging.info("eval: embedded the %d images of %s/%s in %.1f s (%d of them on this process)",
                   n, dataset, split, time.perf_counter() - start, mine)
      self._data_info[f"{dataset}/{split}"] = self._split_info(dataset, split, meta)

      def embed_reports(reports):
        start = time.perf_counter()
        report = ctx.encode_text(reports)
        logging.info("eval: embedded the reports of %s/%s (%d distinct) in %.1f s",
                     dataset, split, len(set(reports)), time.perf_counter() - start)
        return report

      return SplitData(dataset=dataset, split=split, image=image, labels=meta["labels"],
                       reports=meta["reports"], study_ids=meta["study_ids"],
                       extras=meta["extras"], embed_reports=embed_reports,
                       class_names=source.class_names)
    return load

  def contexts(self, *, embed_images: Callable[[np.ndarray], np.ndarray],
               embed_texts: Callable[[list[str]], np.ndarray],
               logit_scale: float) -> dict[str, EvalContext]:
    """Fresh evaluation contexts for one checkpoint, one per dataset, sharing text embeddings."""
    text_cache: dict[str, np.ndarray] = {}
    return {dataset: EvalContext(dataset=dataset, logit_scale=float(logit_scale), seed=self.seed,
                                 load_split=self._load_split(dataset, embed_images),
                                 embed_texts=embed_texts, class_names=source.class_names,
                                 text_cache=text_cache,
                                 load_labels=functools.partial(self._split_labels, dataset))
            for dataset, source in self.sources.items()}

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
    contexts = self.contexts(embed_images=embed_images, embed_texts=embed_texts,
                             logit_scale=logit_scale)
    results: dict[str, Metric] = {}
    self._examples = {}
    for name in names:
      start = time.perf_counter()
      dataset = self.dataset_of[name]
      metrics = self.evaluators[name].evaluate(contexts[dataset])
      if name in contexts[dataset].examples:
        self._examples[(name, dataset)] = contexts[dataset].examples.pop(name)
      for metric, value in metrics.items():
        results[f"{name}/{dataset}/{metric}"] = value
      logging.info("eval %s/%s at step %d: %d metrics in %.2f s", name, dataset, step,
                   len(metrics), time.perf_counter() - start)
    return results

  @staticmethod
  def scalars(results: Mapping[str, Metric]) -> dict[str, float]:
    """{key: value} for a clu metric writer (intervals are in results.json)."""
    return {key: float(m.value) for key, m in results.items()}

  def write(self, workdir: str, results: Mapping[str, Metric], step: int) -> tuple[str, str]:
    """Writes DIR/results.json (with the evaluated splits' identities), DIR/results.md (with
    the paper's tables when the evaluations include theirs) and the per-example arrays of the
    last `run` as DIR/examples/<name>/<dataset>.npz (results.write_examples)."""
    tables = paper.markdown({f"step {step}": results})
    results_lib.write_examples(workdir, self._examples, step=step, seed=self.seed)
    return results_lib.write(workdir, results, step, data=dict(sorted(self._data_info.items())),
                             appendix=f"{PAPER_TABLES_HEADING}\n\n{tables}" if tables else "")
