"""The shared TFDS builder of every real dataset: listing -> report processing -> images -> records.

A dataset is one subclass that names itself and implements `list_studies` (read the untouched
download into a listing.Listing). This class does the rest, identically for every dataset:

1. Report processing per split (datasets with reports): clipmed.report.processing on each
   study's FINDINGS + IMPRESSION, in `workers` processes, report i seeded with [seed, i]; then pool
   hard negatives over the whole split. Labels: the dataset's own where it has them (option
   labels="dataset"), clipmed's labeler otherwise; hard-negative labels always from the labeler.
2. Images: every image of every study through input_pipeline.images (8-bit grey, longest side
   `image_size`, PNG), in `workers` processes or on Apache Beam workers. An unreadable file is a
   reject, not a crash.
3. Records (ArrayRecord), one per image, keyed by image_id; TFDS orders them by a hash of the key,
   so the order does not depend on the workers.
4. In the temporary directory, before TFDS renames it into place: read the records back to write
   clipmed_index.json (per split: image_id, study_id, patient_id, view in record order), the
   split hashes (sha256 of the sorted image_ids) into the dataset info, the WordPiece tokenizer
   of the train reports, and the rejects CSV; stop if more than `max_reject_fraction` of a split's
   images were rejected. An interrupted build therefore never looks complete.

Record fields: image (PNG uint8 [H, W, 1]), image_id, study_id, patient_id, view, labels float32
[K] (class names in info.metadata["class_names"]); with reports also report, findings,
impression and the report-processing fields (work.REPORT_FIELDS).
"""

import abc
import collections
import csv
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors, progress
from clipmed.report import chexpert
from clipmed.report import processing as report_processing
from input_pipeline import extras
from input_pipeline import tokenizer as tokenizer_lib
from input_pipeline.builders import listing
from input_pipeline.builders import work

INDEX_FILE = "clipmed_index.json"
INDEX_FIELDS = ("image_id", "study_id", "patient_id", "view")
TOKENIZER_DIR = "tokenizer"
DEFAULT_IMAGE_SIZE = 512
DEFAULT_VOCAB_SIZE = 30000
_SIDECAR = "_clipmed_beam"  # Beam workers' reject files, inside the temporary build directory
_PNG_MAGIC = b"\x89PNG"


class _ClassProperty:
  """Read-only class-level property (TFDS finds a builder's code through `code_path`)."""

  def __init__(self, fget):
    self.fget = fget

  def __get__(self, obj, cls):
    return self.fget(cls)


@dataclasses.dataclass(eq=False)
class RealDatasetConfig(tfds.core.BuilderConfig):
  """What makes two preparations of one download different datasets (cached separately)."""
  image_size: int = DEFAULT_IMAGE_SIZE
  options: tuple[tuple[str, str], ...] = ()  # (name, value) for every option, sorted
  seed: int = 0          # report processing and seeded splits
  max_examples: int = 0  # studies per split; 0 = all
  vocab_size: int = DEFAULT_VOCAB_SIZE


def report_features(num_classes: int) -> dict[str, Any]:
  """The TFDS features of the report fields (report datasets only)."""
  text = tfds.features.Text
  return {"report": text(), "findings": text(), "impression": text(), "report_clean": text(),
          "graph": text(), "neg_report": text(),
          "neg_labels": tfds.features.Tensor(shape=(num_classes,), dtype=np.float32),
          "neg_graph": text(), "neg_entity": text(), "neg_source": text()}


class RealDatasetBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """Base of the builders of the real datasets (module docstring). Subclasses set the class
  attributes below and implement `list_studies`; TFDS registers each as clipmed_<name>."""

  DATASET: ClassVar[str]        # the --dataset / config.data.name, e.g. "mimic_cxr"
  HOMEPAGE: ClassVar[str]       # where users download it
  CLASS_NAMES: ClassVar[tuple[str, ...]] = chexpert.CATEGORIES
  HAS_REPORTS: ClassVar[bool] = True
  # option name -> (default, allowed values or None for free text); part of the config name.
  OPTIONS: ClassVar[dict[str, tuple[str, tuple[str, ...] | None]]] = {}
  code_path = _ClassProperty(lambda cls: epath.Path(__file__))
  # What TFDS prints when the download is missing: the dataset module's docstring.
  MANUAL_DOWNLOAD_INSTRUCTIONS = _ClassProperty(lambda cls: sys.modules[cls.__module__].__doc__)

  def __init__(self, *, config: RealDatasetConfig, workers: int = 1,
               max_reject_fraction: float = 0.05, beam: bool = False, progress: bool = True,
               **kwargs):
    """Args beyond TFDS's: workers (processes for reports and images), max_reject_fraction (of
    a split's images; more stops the build), beam (images on Apache Beam; set the runner in the
    DownloadConfig), progress (progress bars)."""
    super().__init__(config=config, file_format="array_record", **kwargs)
    self.workers = max(1, int(workers))
    self.max_reject_fraction = float(max_reject_fraction)
    self.beam = bool(beam)
    self.progress = bool(progress)
    self.final_dir = os.fspath(self.data_dir)
    self.rejects: list[listing.Reject] = []
    self.filtered: dict[str, int] = {}
    self._processes = None  # the worker pool, started on first use, closed after the build

  @property
  def options(self) -> dict[str, str]:
    return dict(self.builder_config.options)

  @property
  def rejects_csv(self) -> str:
    """Where the rejects of this dataset are written (beside the version directory)."""
    return os.path.join(os.path.dirname(self.final_dir), f"rejects-{self.version}.csv")

  def find(self, manual_dir: str, names: str | list[str], what: str) -> str:
    """The first of `names` (relative to manual_dir) that exists; else a DataError naming the
    expected path, what is there instead and HOMEPAGE (listing.find_file)."""
    names = [names] if isinstance(names, str) else list(names)
    return listing.find_file(manual_dir, names, dataset=self.DATASET, homepage=self.HOMEPAGE,
                             what=what)

  @abc.abstractmethod
  def list_studies(self, manual_dir: str) -> listing.Listing:
    """Reads the download in manual_dir (self.options set) into a Listing; DataError on a wrong
    layout, naming the expected path, what was found and HOMEPAGE."""

  # ----------------------------------------------------------------------------- TFDS interface

  def _info(self) -> tfds.core.DatasetInfo:
    num = len(self.CLASS_NAMES)
    features = {
        "image": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                     encoding_format="png"),
        "image_id": tfds.features.Text(), "study_id": tfds.features.Text(),
        "patient_id": tfds.features.Text(), "view": tfds.features.Text(),
        "labels": tfds.features.Tensor(shape=(num,), dtype=np.float32),
    }
    if self.HAS_REPORTS:
      features.update(report_features(num))
    cfg = self.builder_config
    return self.dataset_info_from_configs(
        description=(self.__doc__ or "").strip(),
        features=tfds.features.FeaturesDict(features),
        homepage=self.HOMEPAGE,
        metadata=tfds.core.MetadataDict(
            dataset=self.DATASET, class_names=list(self.CLASS_NAMES), image_size=cfg.image_size,
            options=dict(cfg.options), seed=cfg.seed, max_examples=cfg.max_examples),
        disable_shuffling=False)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(manual_dir):
      raise errors.DataError(f"{self.DATASET}: --manual_dir={manual_dir} is not a directory; "
                             f"point it at the unpacked download from {self.HOMEPAGE}")
    found = self.list_studies(manual_dir)
    self.rejects, self.filtered = list(found.rejects), dict(found.filtered)
    for note in found.notes:
      progress.say(f"{self.DATASET}: {note}")
    limit = self.builder_config.max_examples
    generators = {}
    for split, studies in found.splits.items():
      studies = studies[:limit] if limit else studies
      if self.HAS_REPORTS:
        studies = self._without_empty_reports(split, studies)
      if not studies:
        continue
      self._check_reject_rate(split, sum(len(s.images) for s in studies)
                              + self._num_rejects(split))
      tasks = self._study_tasks(split, studies)
      generators[split] = (self._beam_examples(split, tasks) if self.beam
                           else self._generate_examples(split, tasks))
    if not generators:
      raise errors.DataError(f"{self.DATASET}: no usable study found in {manual_dir}; see "
                             f"{self.rejects_csv}" if self.rejects else
                             f"{self.DATASET}: no study found in {manual_dir}")
    return generators

  def _generate_examples(self, split: str, tasks: list[work.StudyTask]):
    with self._bar(len(tasks), f"{self.DATASET} {split}: images", "studies") as bar:
      results = self._map(work.build_study, tasks, chunksize=4)
      yield from work.unpack(_counting(results, bar), self.rejects)

  def _beam_examples(self, split: str, tasks: list[work.StudyTask]):
    beam = tfds.core.lazy_imports.apache_beam
    rejects_prefix = os.path.join(os.fspath(self.data_dir), _SIDECAR, f"rejects-{split}")

    def expand(root):
      results = (root | "studies" >> beam.Create(tasks)
                 | "images" >> beam.Map(work.build_study))
      _ = (results | "rejects" >> beam.FlatMap(lambda r: r[1])
           | "to_json" >> beam.Map(lambda r: json.dumps(dataclasses.asdict(r)))
           | "write_rejects" >> beam.io.WriteToText(rejects_prefix, file_name_suffix=".jsonl"))
      return results | "examples" >> beam.FlatMap(lambda r: r[0])
    return beam.ptransform_fn(expand)()

  def _download_and_prepare(self, dl_manager, download_config):
    try:
      super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
    finally:
      if self._processes is not None:
        self._processes.close()
        self._processes.join()
        self._processes = None
    sidecar = os.path.join(os.fspath(self.data_dir), _SIDECAR)
    for path in sorted(glob.glob(os.path.join(sidecar, "*.jsonl"))):
      with open(path, encoding="utf-8") as f:
        self.rejects += [listing.Reject(**json.loads(line)) for line in f if line.strip()]
    if os.path.isdir(sidecar):
      epath.Path(sidecar).rmtree()
    self._write_rejects_csv()
    index, train_texts = self._read_back()
    for split, fields in index.items():
      self._check_reject_rate(split, len(fields["image_id"]) + self._num_rejects(split))
    self.info.metadata["splits"] = {
        split: dict(images=len(f["image_id"]), studies=len(set(f["study_id"])),
                    image_id_sha256=split_hash(f["image_id"]))
        for split, f in index.items()}
    self.info.metadata["rejected"] = len(self.rejects)
    self.info.metadata["filtered"] = dict(self.filtered)
    with open(os.path.join(os.fspath(self.data_dir), INDEX_FILE), "w", encoding="utf-8") as f:
      json.dump(index, f)
    if self.HAS_REPORTS and train_texts:
      progress.say(f"{self.DATASET}: training a WordPiece tokenizer (vocab "
           f"{self.builder_config.vocab_size}) on {len(train_texts) // 2} train reports")
      tokenizer_lib.train_wordpiece(train_texts, os.path.join(os.fspath(self.data_dir),
                                                               TOKENIZER_DIR),
                                    self.builder_config.vocab_size)

  # ----------------------------------------------------------------------------- the steps

  def _without_empty_reports(self, split: str,
                             studies: list[listing.Study]) -> list[listing.Study]:
    """Studies whose FINDINGS + IMPRESSION are empty are rejected, all their images."""
    kept = []
    for study in studies:
      if study.report.strip():
        kept.append(study)
      else:
        self.rejects += [listing.Reject(split, study.study_id, ref.image_id, ref.path,
                                        "empty report (no findings or impression)")
                         for ref in study.images]
    return kept

  def _study_tasks(self, split: str, studies: list[listing.Study]) -> list[work.StudyTask]:
    """Report processing of a split (when the dataset has reports) -> one task per study."""
    cfg = self.builder_config
    use_dataset_labels = self.options.get("labels", "dataset") == "dataset"
    records = [{}] * len(studies)
    if self.HAS_REPORTS:
      seed = _split_seed(cfg.seed, split)
      reports = [(i, study.report, seed) for i, study in enumerate(studies)]
      with self._bar(len(reports), f"{self.DATASET} {split}: reports", "studies") as bar:
        records = list(_counting(self._map(work.process_report, reports, chunksize=64), bar))
      report_processing.assign_pool_negatives(records, np.random.default_rng([seed, len(records)]))
      report_processing.fill_missing_negatives(records,
                                               np.random.default_rng([seed, len(records), 1]))
    tasks = []
    for study, record in zip(studies, records):
      if study.labels is not None and use_dataset_labels:
        labels = np.asarray(study.labels, np.float32)
      elif self.HAS_REPORTS:
        labels = record["labels"]
      else:
        raise errors.DataError(f"{self.DATASET}: study {study.study_id} has no labels")
      fields = {k: record[k] for k in work.REPORT_FIELDS} if self.HAS_REPORTS else {}
      tasks.append(work.StudyTask(split=split, study=study, labels=labels, report_fields=fields,
                                  image_size=cfg.image_size))
    return tasks

  def _read_back(self) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """Per split the INDEX_FIELDS of every record in order; the train reports (and their hard
    negatives) once per study, for the tokenizer."""
    index, train_texts, seen = {}, [], set()
    for split in self.info.splits:
      source = self.as_data_source(split=split,
                                   decoders={"image": tfds.decode.SkipDecoding()})
      fields = {name: [] for name in INDEX_FIELDS}
      for start in range(0, len(source), 256):
        for row in source.__getitems__(list(range(start, min(start + 256, len(source))))):
          for name in INDEX_FIELDS:
            fields[name].append(extras.as_text(row[name]))
          if self.HAS_REPORTS and split == "train" and fields["study_id"][-1] not in seen:
            seen.add(fields["study_id"][-1])
            train_texts += [extras.as_text(row["report"]), extras.as_text(row["neg_report"])]
      index[split] = fields
    return index, train_texts

  def _num_rejects(self, split: str) -> int:
    return sum(r.split == split for r in self.rejects)

  def _check_reject_rate(self, split: str, total: int) -> None:
    rejected = self._num_rejects(split)
    if total and rejected / total > self.max_reject_fraction:
      self._write_rejects_csv()
      reasons = collections.Counter(r.reason for r in self.rejects if r.split == split)
      raise errors.DataError(
          f"{self.DATASET}: {rejected} of {total} images of split {split!r} were rejected "
          f"({100 * rejected / total:.1f}%, more than {100 * self.max_reject_fraction:.0f}%), "
          f"mostly {reasons.most_common(1)[0][0]!r}; see {self.rejects_csv}. Check the download "
          f"(from {self.HOMEPAGE}) or raise --max_reject_fraction.")

  def _write_rejects_csv(self) -> None:
    os.makedirs(os.path.dirname(self.rejects_csv), exist_ok=True)
    with open(self.rejects_csv, "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(["split", "study_id", "image_id", "path", "reason"])
      for r in sorted(self.rejects, key=lambda r: (r.split, r.study_id, r.image_id)):
        writer.writerow([r.split, r.study_id, r.image_id, r.path, r.reason])

  def _map(self, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int) -> Iterator[Any]:
    """fn over items, results in order; in `workers` processes (one pool per build) when > 1."""
    if self.workers == 1:
      return map(fn, items)
    if self._processes is None:  # spawn: the parent has TensorFlow loaded, which forks badly
      self._processes = multiprocessing.get_context("spawn").Pool(self.workers)
    return self._processes.imap(fn, items, chunksize=chunksize)

  def _bar(self, total: int, desc: str, unit: str) -> progress.Progress:
    """A progress bar on a terminal; a plain line every 30 s in a log file (SLURM, CI)."""
    return progress.Progress(total, desc, unit, enabled=self.progress)

  # TFDS prints "Downloading and preparing dataset Unknown size ..." and a "Dataset ... prepared"
  # line of its own around generation; clipmed's bars and summary say it once.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass


def _counting(results: Iterable[Any], bar) -> Iterator[Any]:
  for result in results:
    bar.update(1)
    yield result


def _split_seed(seed: int, split: str) -> int:
  """The report-processing seed of a split: distinct per (seed, split), stable across runs."""
  digest = hashlib.sha256(f"{seed}/{split}".encode()).digest()
  return int.from_bytes(digest[:4], "little")


def split_hash(image_ids: Iterable[str]) -> str:
  """sha256 of the sorted image_ids of a split, one per line: equal hashes, equal images."""
  return hashlib.sha256("\n".join(sorted(image_ids)).encode("utf-8")).hexdigest()


def make_config(builder_cls: type[RealDatasetBuilder], *, image_size: int = DEFAULT_IMAGE_SIZE,
                options: Mapping[str, str] | None = None, seed: int = 0, max_examples: int = 0,
                vocab_size: int = DEFAULT_VOCAB_SIZE) -> RealDatasetConfig:
  """A config of `builder_cls`, named after what differs from the defaults.

  Raises:
    ConfigError: an unknown option, or a value outside the option's allowed values.
  """
  given = dict(options or {})
  unknown = sorted(set(given) - set(builder_cls.OPTIONS))
  if unknown:
    raise errors.ConfigError(f"{builder_cls.DATASET} has no option {unknown}; its options are "
                             f"{sorted(builder_cls.OPTIONS) or 'none'}")
  values = {}
  for name, (default, allowed) in builder_cls.OPTIONS.items():
    value = str(given.get(name, default))
    if allowed is not None and value not in allowed:
      raise errors.ConfigError(f"{builder_cls.DATASET}: --{name}={value!r}; choose one of "
                               f"{list(allowed)}")
    values[name] = value
  if image_size < 32:
    raise errors.ConfigError(f"--image_size={image_size} is too small (>= 32)")
  parts = [f"s{image_size}"]
  changed = {k: v for k, v in values.items() if v != builder_cls.OPTIONS[k][0]}
  if changed:
    parts.append(hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8])
  if seed:
    parts.append(f"seed{seed}")
  if max_examples:
    parts.append(f"max{max_examples}")
  if vocab_size != DEFAULT_VOCAB_SIZE:
    parts.append(f"v{vocab_size}")
  return RealDatasetConfig(
      name="_".join(parts), version=builder_cls.VERSION,
      description=f"{builder_cls.DATASET} at {image_size}px, options {values}",
      image_size=int(image_size), options=tuple(sorted(values.items())), seed=int(seed),
      max_examples=int(max_examples), vocab_size=int(vocab_size))
