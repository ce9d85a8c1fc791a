"""Types shared by the evaluation tasks (README, "Evaluation").

An `Evaluator` is built from its own config block and evaluates one checkpoint through an
`EvalContext`, which embeds each split once and caches text embeddings, so all tasks of one
checkpoint share the same embeddings.
"""

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import ml_collections
import numpy as np

from clipmed import errors
from clipmed.normalize import l2_normalize
from clipmed.report import chexpert


@dataclasses.dataclass(frozen=True)
class Metric:
  """A metric value with its seeded 95% bootstrap confidence interval.

  Deterministic quantities (chance rates) carry ci_low == ci_high == value. NaN marks a metric that
  is undefined on this split (e.g. an AUROC for a class without positives).
  """
  value: float
  ci_low: float
  ci_high: float


class SplitData:
  """One split of one dataset on the host, embedded with one checkpoint.

  Row i of every array and list belongs to study i. The report embeddings may be given directly
  or computed on first access with `embed_reports` (the linear probe's training split never
  needs them).

  Attributes:
    dataset: e.g. "synth_cxr".
    split: e.g. "test".
    image: [N, D] L2-normalised image embeddings.
    report: [N, D] L2-normalised embeddings of the study reports (a lazy property).
    labels: [N, K] float32 labeler convention (1, 0, -1, NaN).
    class_names: the K label classes (CheXpert-14 by default).
    reports: [N] report texts.
    study_ids: [N].
    extras: dataset-specific per-study extras, each a length-N list.
  """

  def __init__(self, *, dataset: str, split: str, image: np.ndarray, labels: np.ndarray,
               reports: list[str], study_ids: list[str], extras: dict[str, Any],
               report: np.ndarray | None = None,
               embed_reports: Callable[[list[str]], np.ndarray] | None = None,
               class_names: Sequence[str] = chexpert.CATEGORIES):
    if report is None and embed_reports is None:
      raise ValueError("SplitData needs `report` embeddings or an `embed_reports` function")
    self.dataset = dataset
    self.split = split
    self.image = image
    self.labels = labels
    self.reports = reports
    self.study_ids = study_ids
    self.extras = extras
    self.class_names = tuple(class_names)
    self._report = report
    self._embed_reports = embed_reports

  @property
  def report(self) -> np.ndarray:
    if self._report is None:
      self._report = self._embed_reports(self.reports)
    return self._report

  @property
  def num_studies(self) -> int:
    return len(self.reports)


class EvalContext:
  """What the evaluation of one checkpoint offers the tasks.

  Splits are loaded (embedded) lazily on first use and cached; text embeddings are cached per
  distinct text, so prompts and reports shared by several tasks are embedded once.
  """

  def __init__(self, *, dataset: str, logit_scale: float, seed: int,
               load_split: Callable[["EvalContext", str], SplitData],
               embed_texts: Callable[[list[str]], np.ndarray],
               class_names: Sequence[str] = chexpert.CATEGORIES,
               text_cache: dict[str, np.ndarray] | None = None,
               load_labels: Callable[[str], np.ndarray] | None = None):
    """Builds the context.

    Args:
      dataset: dataset name used in result keys.
      logit_scale: the model's logit scale s (temperature inverse), a Python float.
      seed: seed for everything random in the evaluation (bootstrap, subsets, sampling).
      load_split: (ctx, split name) -> SplitData; called at most once per split. It receives the
        context so that it can embed the reports through the shared text cache.
      embed_texts: list of M texts -> [M, D] embeddings; the caller batches. Rows are
        L2-normalised here again, so an unnormalised embedding is harmless.
      class_names: the dataset's K label classes.
      text_cache: text -> embedding, shared with other contexts of the same checkpoint.
      load_labels: split name -> [N, K] labels without embedding its images (the zero-shot
        decision's class rates); None: taken from `split`, which embeds it.
    """
    self.dataset = dataset
    self.logit_scale = float(logit_scale)
    self.seed = int(seed)
    self._load_split = load_split
    self._embed_texts = embed_texts
    self.class_names = tuple(class_names)
    self._splits: dict[str, SplitData] = {}
    self._text_cache = {} if text_cache is None else text_cache
    self._load_labels = load_labels
    # evaluation name -> its per-example arrays (record); the runner saves them.
    self.examples: dict[str, dict[str, np.ndarray]] = {}

  def columns(self, names: Sequence[str], where: str) -> list[int]:
    """Indices of `names` among the dataset's classes; ConfigError naming `where` otherwise."""
    missing = [n for n in names if n not in self.class_names]
    if missing:
      raise errors.ConfigError(f"{where}: {self.dataset} has no class {missing}; its classes are "
                               f"{list(self.class_names)}")
    return [self.class_names.index(n) for n in names]

  @classmethod
  def from_splits(cls, splits: dict[str, SplitData], *, embed_texts, logit_scale: float = 1.0,
                  seed: int = 0, dataset: str | None = None) -> "EvalContext":
    """A context over already embedded splits (tests, notebooks, precomputed embeddings)."""
    def load(ctx, name):
      del ctx
      if name not in splits:
        raise ValueError(f"split {name!r} is not available; have {sorted(splits)}")
      return splits[name]
    if dataset is None:
      dataset = next(iter(splits.values())).dataset if splits else ""
    class_names = (next(iter(splits.values())).class_names if splits
                   else chexpert.CATEGORIES)
    return cls(dataset=dataset, logit_scale=logit_scale, seed=seed, load_split=load,
               embed_texts=embed_texts, class_names=class_names)

  def split(self, name: str) -> SplitData:
    """The named split, embedded with this checkpoint (cached)."""
    if name not in self._splits:
      self._splits[name] = self._load_split(self, name)
    return self._splits[name]

  def split_labels(self, name: str) -> np.ndarray:
    """[N, K] labels of the named split (labeler convention); its images are not embedded when
    the context was given `load_labels`."""
    if name in self._splits or self._load_labels is None:
      return self.split(name).labels
    return self._load_labels(name)

  def record(self, evaluator: "Evaluator", data: SplitData,
             examples: Mapping[str, Any]) -> None:
    """Keeps an evaluation's per-example arrays (row i = data.study_ids[i]) for the runner to save.

    `examples` must hold everything `type(evaluator).statistics` needs to recompute the task's
    bootstrap metrics; the task name, the split and the study ids are added here.
    """
    out = {key: np.asarray(value) for key, value in examples.items()}
    out.update(task=np.asarray(evaluator.task), split=np.asarray(data.split),
               study_ids=np.asarray(data.study_ids, dtype=str))
    self.examples[evaluator.name] = out

  def encode_text(self, texts: Sequence[str]) -> np.ndarray:
    """[M] texts -> [M, D] L2-normalised embeddings; each distinct text is embedded once."""
    texts = list(texts)
    missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
    if missing:
      emb = l2_normalize(np.asarray(self._embed_texts(missing)))
      if emb.ndim != 2 or emb.shape[0] != len(missing):
        raise ValueError(f"embed_texts returned shape {emb.shape} for {len(missing)} texts; "
                         "it must return one [D] row per input text")
      self._text_cache.update(zip(missing, emb))
    if not texts:
      return np.zeros((0, 0), np.float32)
    return np.stack([self._text_cache[t] for t in texts])


class Evaluator(abc.ABC):
  """One evaluation task, configured by its own `config.evals.<name>` block.

  Common config fields: task (the EVALUATORS key), split, every_steps, num_bootstrap.
  """
  task: ClassVar[str]  # results-key prefix: zero_shot, retrieval, linear_probe, ...
  needs_reports: ClassVar[bool] = False  # uses report texts (not available on label datasets)
  # Config fields the task needs beyond the common ones; checked at construction.
  required_fields: ClassVar[tuple[str, ...]] = ()

  def __init__(self, config: ml_collections.ConfigDict, name: str | None = None):
    self.config = config
    self.name = name or self.task
    missing = [f for f in ("split", "num_bootstrap") + self.required_fields if f not in config]
    if missing:
      raise errors.ConfigError(f"config.evals.{self.name} (task {self.task!r}) lacks the field(s) "
                               f"{missing}; add them to the evals block of your config (the fields "
                               f"are listed in the docstring of {type(self).__module__})")

  @abc.abstractmethod
  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    """Returns metric name -> Metric (names without the task/dataset prefix).

    A task records its per-example arrays with `ctx.record` and computes its bootstrap metrics
    with `statistics` of those arrays, so that saved examples reproduce them without the model.
    """

  @staticmethod
  def statistics(examples: Mapping[str, np.ndarray]
                 ) -> Callable[[np.ndarray], Mapping[str, np.ndarray]]:
    """The task's weighted statistics (metrics.StatFn: w [R, N] -> {metric: [R]}) computed from
    the per-example arrays it records; constants (chance rates) are not among them. A task that
    records no examples leaves this unimplemented (paired comparisons then skip it)."""
    raise NotImplementedError
