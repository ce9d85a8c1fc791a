"""Report processing of a SynthCXR split: cleaned report, report graphs and a hard negative.

    records = process_split(texts, seed=0, split="train")   # every report of the split at once

Runs clipmed.report.processing.process_reports over the whole split (pool negatives of normal
studies are drawn from the split's own single-entity reports; each distinct normal report is
processed once, see process_reports_cached), then gives a hard negative to the studies it left
without one (clipmed.report.processing.fill_missing_negatives), so that every study of a
real-sized split has one, as METHOD.md asks. The builder stores the fields of STORED_FIELDS next
to the generated ones; the generator's ground-truth `labels` stay as they are (process_reports' own
labels of the cleaned report are used here only to pick negatives).
"""

from collections.abc import Callable, Sequence
import time
from typing import Any

import numpy as np

from clipmed import progress as progress_lib
from clipmed.report import hard_negatives
from clipmed.report import processing as report_processing
from input_pipeline.synthcxr import generate

# Fields of clipmed.report.processing.FIELDS stored per study ("labels" is not: the generator's
# ground truth is stored instead).
STORED_FIELDS = ("report_clean", "graph", "neg_report", "neg_labels", "neg_graph", "neg_entity",
                 "neg_source")
# Stream id that keeps report-processing draws apart from the example generators' draws.
_PROCESSING_STREAM = 1


def processing_seed(seed: int, split: str) -> int:
  """The process_reports seed of a split: distinct per (seed, split), stable across runs."""
  if split not in generate.SPLIT_IDS:
    raise ValueError(f"unknown SynthCXR split {split!r}; expected one of "
                     f"{list(generate.SPLIT_IDS)}")
  entropy = [int(seed), generate.SPLIT_IDS[split], _PROCESSING_STREAM]
  return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def process_reports_cached(texts: Sequence[str], *, seed: int,
                           progress: Callable[[int], None] | None = None
                           ) -> list[dict[str, Any]]:
  """clipmed.report.processing.process_reports(texts, seed=seed), computed once per distinct normal
  report.

  SynthCXR repeats its normal reports many times (6000 train reports have about 3750 distinct
  texts). A normal report's record does not depend on its generator (there is no entity to
  negate), so duplicates reuse it; abnormal reports draw their hard negative from
  np.random.default_rng([seed, i]) as process_reports does, and so does the pool step. The result
  equals process_reports' (tests/test_synthcxr.py checks it).
  """
  records, normal_cache = [], {}
  for i, text in enumerate(texts):
    cached = normal_cache.get(text)
    if cached is None:
      record = report_processing.process_report(text, rng=np.random.default_rng([seed, i]))
      if not hard_negatives.is_abnormal(record["labels"]):
        normal_cache[text] = record
    else:
      record = {**cached, "labels": cached["labels"].copy(),
                "neg_labels": cached["neg_labels"].copy()}
    records.append(record)
    if progress is not None:
      progress(i + 1)
  report_processing.assign_pool_negatives(records, np.random.default_rng([seed, len(texts)]))
  return records


def process_split(texts: Sequence[str], *, seed: int, split: str,
                  bar: progress_lib.Progress | None = None) -> list[dict[str, Any]]:
  """Processes every report of a split: clean text, graphs and one hard negative each.

  Deterministic: report i draws from process_reports' generator for processing_seed(seed, split);
  the fill step from np.random.default_rng([processing_seed(seed, split), len(texts), 1]).

  Args:
    texts: the N reports of the split, in record order.
    seed: the dataset's generation seed.
    split: "train", "validation" or "test".
    bar: counts the reports and gets a hard-negative summary line; None is silent.

  Returns:
    N dicts with the keys of clipmed.report.processing.FIELDS (of which STORED_FIELDS are stored).
  """
  num = len(texts)
  start = time.perf_counter()
  split_seed = processing_seed(seed, split)
  records = process_reports_cached(list(texts), seed=split_seed,
                                   progress=None if bar is None else lambda _: bar.update())
  filled = report_processing.fill_missing_negatives(
      records, np.random.default_rng([split_seed, num, 1]))
  if bar is not None and num:
    sources = [r["neg_source"] for r in records]
    counts = ", ".join(f"{s} {sources.count(s)}" for s in ("negated", "pool", "none"))
    bar.write(f"{bar.desc}: hard negatives {counts} ({filled} abnormal studies without a "
              f"negatable positive finding got a pool one); {time.perf_counter() - start:.1f}s")
  return records
