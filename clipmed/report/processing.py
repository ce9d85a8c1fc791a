"""Per-study report processing for dataset preparation (cleaned report, labels, graphs, hard
negative).

    records = process_reports(texts, seed=0)     # all training reports of a split at once

Each record holds the fields of FIELDS. Abnormal studies get r^n as hard negative; normal studies
get a report of the same split with exactly one positive entity (METHOD.md, "Hard negatives"), so
the pool step needs every report of the split: use process_reports, or process_report per study
and then assign_pool_negatives.
"""

from collections.abc import Callable, Sequence
import json
from typing import Any

import numpy as np

from clipmed.report import chexpert
from clipmed.report import clean
from clipmed.report import graph as graph_lib
from clipmed.report import hard_negatives
from clipmed.report import labeler

# name -> (dtype, shape, meaning). Graphs are JSON text {"nodes": [[text, type]...], "edges":
# [[src, dst, relation]...]} (graph.graph_to_dict); input_pipeline/graphs.py pads them.
FIELDS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "report_clean": ("str", (), "cleaned report: one finding per sentence, no prior-study "
                     "references"),
    "labels": ("float32", (chexpert.NUM_CATEGORIES,),
               "labels of report_clean (1 pos, 0 neg, -1 uncertain, NaN not mentioned)"),
    "graph": ("str", (), "report graph of report_clean, JSON"),
    "neg_report": ("str", (), "hard-negative report ('' when none could be made)"),
    "neg_labels": ("float32", (chexpert.NUM_CATEGORIES,), "labels of neg_report (all NaN if none)"),
    "neg_graph": ("str", (), "report graph of neg_report, JSON"),
    "neg_entity": ("str", (), "CheXpert category that differs ('' when none)"),
    "neg_source": ("str", (), "'negated' (r^n of this report), 'pool' (another report of the "
                   "split with one positive entity) or 'none'"),
}
_EMPTY_GRAPH = json.dumps({"nodes": [], "edges": []})


def _graph_json(text: str) -> str:
  return json.dumps(graph_lib.graph_to_dict(graph_lib.extract_graph(text, sections_only=False)))


def process_report(text: str, *, rng: np.random.Generator) -> dict[str, Any]:
  """Processes one report: cleaned text, labels, graph and (for abnormal studies) r^n.

  Args:
    text: free-text report.
    rng: numpy Generator for the hard negative.

  Returns:
    A dict with the keys of FIELDS; normal studies have neg_source "none" until
    assign_pool_negatives fills them in.
  """
  sentences = clean.clean_sentences(text)
  report = " ".join(sentences)
  record = {
      "report_clean": report,
      "labels": labeler.label_sentences(sentences),
      "graph": _graph_json(report),
      "neg_report": "",
      "neg_labels": np.full((chexpert.NUM_CATEGORIES,), np.nan, np.float32),
      "neg_graph": _EMPTY_GRAPH,
      "neg_entity": "",
      "neg_source": "none",
  }
  hn = hard_negatives.make_hard_negative(sentences, rng, cleaned=True)
  if hn is not None:
    record.update(neg_report=hn.negated, neg_labels=hn.negated_labels,
                  neg_graph=_graph_json(hn.negated), neg_entity=hn.entity, neg_source="negated")
  return record


def assign_pool_negatives(records: list[dict[str, Any]], rng: np.random.Generator) -> None:
  """Gives every normal study a single-entity report of the same list as hard negative (in place).

  Args:
    records: process_report outputs of one split.
    rng: numpy Generator.
  """
  if not records:
    return
  labels = np.stack([r["labels"] for r in records])  # [N, 14]
  picks = hard_negatives.pool_negatives(labels, rng)
  for record, j in zip(records, picks.tolist()):
    if j < 0 or record["neg_source"] != "none":
      continue
    source = records[j]
    entity = [chexpert.CATEGORIES[k] for k in range(chexpert.NUM_CATEGORIES)
              if k not in hard_negatives.EXCLUDED_ENTITIES and source["labels"][k] == 1.0]
    record.update(neg_report=source["report_clean"], neg_labels=source["labels"].copy(),
                  neg_graph=source["graph"], neg_entity=entity[0], neg_source="pool")


def process_reports(texts: Sequence[str], *, seed: int = 0,
                    progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
  """Processes all reports of a split, hard negatives included.

  Report i draws from np.random.default_rng([seed, i]); the pool step from
  np.random.default_rng([seed, len(texts)]).

  Args:
    texts: N report texts.
    seed: random seed.
    progress: optional callback(done).

  Returns:
    N dicts with the keys of FIELDS.
  """
  records = []
  for i, text in enumerate(texts):
    records.append(process_report(text, rng=np.random.default_rng([seed, i])))
    if progress is not None:
      progress(i + 1)
  assign_pool_negatives(records, np.random.default_rng([seed, len(texts)]))
  return records


def _present(labels: np.ndarray) -> set[int]:
  """Finding categories (No Finding / Support Devices aside) that are positive or uncertain."""
  return {i for i in range(chexpert.NUM_CATEGORIES)
          if i not in hard_negatives.EXCLUDED_ENTITIES
          and labels[i] in (chexpert.POSITIVE, chexpert.UNCERTAIN)}


def fill_missing_negatives(records: list[dict[str, Any]], rng: np.random.Generator) -> int:
  """Gives a pool hard negative to every record that has none (in place).

  process_reports leaves neg_source == "none" for studies that are neither normal nor have a
  positive finding that can be negated cleanly: mostly studies whose only findings are uncertain
  ("possible small left pleural effusion"), and studies whose report names nothing but the
  finding (its r^r would be empty), about 3% of a SynthCXR split.
  Such a study gets a report of the split with exactly one positive entity, as a normal study
  does, chosen among those whose entity is not already present (positive or uncertain) in the
  study, so that the negative asserts a finding the study does not. neg_source is "pool".

  Args:
    records: process_reports outputs of one split.
    rng: numpy Generator for the picks.

  Returns:
    The number of records filled. Records stay "none" only when the split has no usable
    single-entity report (tiny splits).
  """
  missing = [i for i, r in enumerate(records) if r["neg_source"] == "none"]
  if not missing:
    return 0
  labels = np.stack([r["labels"] for r in records])  # [N, 14]
  pool = np.flatnonzero(hard_negatives.single_entity_mask(labels))
  pool_entity = {int(j): next(iter(_present(labels[j]))) for j in pool}
  filled = 0
  for i in missing:
    present = _present(labels[i])
    choices = [j for j in pool_entity if j != i and pool_entity[j] not in present]
    if not choices:
      continue
    j = choices[int(rng.integers(len(choices)))]
    source = records[j]
    records[i].update(neg_report=source["report_clean"], neg_labels=source["labels"].copy(),
                      neg_graph=source["graph"], neg_entity=chexpert.CATEGORIES[pool_entity[j]],
                      neg_source="pool")
    filled += 1
  return filled
