"""Measures the rule-based report tools on Open-i reports with MeSH-derived labels.

    python scripts/measure_report_quality.py --openi /path/to/openi_dev.csv

The CSV has columns findings, impression and the 14 CheXpert categories (1 where a MeSH code maps
to the category, blank otherwise; blank means "not coded", not negative). Prints:
  * labels: per-category F1 of "positive or uncertain" against the MeSH positives, and the macro
    F1 over the eight categories the acceptance criterion names;
  * hard negatives: the share of abnormal reports that get a CXR-Align triplet, and the share of
    triplets where the labeler, run again on the written texts, marks the chosen entity negative in
    r^n and not mentioned in r^r with every other category (No Finding aside) unchanged;
  * speed: reports per second of the labeler on one core.
The data stays outside the repository; pass its path.
"""

import argparse
import csv
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipmed.report import chexpert  # noqa: E402
from clipmed.report import hard_negatives  # noqa: E402
from clipmed.report import labeler  # noqa: E402
from clipmed.report import sections  # noqa: E402

MACRO_CATEGORIES = ("No Finding", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Atelectasis",
                    "Pleural Effusion", "Fracture", "Support Devices")


def _read(path: str) -> tuple[list[str], np.ndarray]:
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  missing = [c for c in ("findings", "impression") + chexpert.CATEGORIES if c not in rows[0]]
  if missing:
    sys.exit(f"{path}: missing columns {missing}")
  texts = [sections.join_fields(r["findings"], r["impression"]) for r in rows]
  mesh = np.array([[1.0 if r[c].strip() in ("1", "1.0") else 0.0 for c in chexpert.CATEGORIES]
                   for r in rows], dtype=np.float32)
  return texts, mesh


def label_f1(pred: np.ndarray, mesh: np.ndarray) -> dict[str, tuple[int, int, int, float]]:
  """Per category: (tp, fp, fn, F1) of positive-or-uncertain against MeSH 1."""
  hit = (pred == chexpert.POSITIVE) | (pred == chexpert.UNCERTAIN)
  out = {}
  for j, name in enumerate(chexpert.CATEGORIES):
    tp = int(np.sum(hit[:, j] & (mesh[:, j] == 1)))
    fp = int(np.sum(hit[:, j] & (mesh[:, j] == 0)))
    fn = int(np.sum(~hit[:, j] & (mesh[:, j] == 1)))
    out[name] = (tp, fp, fn, 2 * tp / max(1, 2 * tp + fp + fn))
  return out


def _same(a: float, b: float) -> bool:
  return a == b or (math.isnan(a) and math.isnan(b))


def triplet_correct(row: dict[str, str]) -> bool:
  """Re-labels a written triplet and checks the one-entity difference."""
  entity = chexpert.INDEX[row["chosen_entity"]]
  ref = labeler.label_report(row["report"])
  neg = labeler.label_report(row["negated"])
  omi = labeler.label_report(row["omitted"])
  if neg[entity] != chexpert.NEGATIVE or not math.isnan(omi[entity]):
    return False
  return all(_same(float(ref[i]), float(neg[i])) and _same(float(ref[i]), float(omi[i]))
             for i in range(chexpert.NUM_CATEGORIES) if i not in (entity, chexpert.NO_FINDING))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--openi", required=True, help="CSV of Open-i reports with MeSH labels")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--examples", type=int, default=0, help="print this many triplets")
  args = parser.parse_args()
  texts, mesh = _read(args.openi)

  # Speed: CPU time of this (single-threaded) process, best of three passes, so that other
  # processes on a shared machine do not count against the labeler.
  elapsed = float("inf")
  for _ in range(3):
    start = time.process_time()
    pred = labeler.label_reports(texts)
    elapsed = min(elapsed, time.process_time() - start)
  scores = label_f1(pred, mesh)
  print(f"Labels: {len(texts)} reports, F1 of positive-or-uncertain vs MeSH positives")
  print(f"  {'category':28s} {'MeSH+':>6s} {'tp':>5s} {'fp':>5s} {'fn':>5s} {'F1':>6s}")
  for name in chexpert.CATEGORIES:
    tp, fp, fn, f1 = scores[name]
    mark = "*" if name in MACRO_CATEGORIES else " "
    print(f" {mark}{name:28s} {tp + fn:6d} {tp:5d} {fp:5d} {fn:5d} {f1:6.3f}")
  macro = float(np.mean([scores[n][3] for n in MACRO_CATEGORIES]))
  print(f"  macro F1 over the 8 starred categories: {macro:.3f}")
  print(f"  macro F1 over all 14 categories: "
        f"{float(np.mean([s[3] for s in scores.values()])):.3f}")

  abnormal = [any(p[i] == chexpert.POSITIVE for i in range(chexpert.NUM_CATEGORIES)
                  if i not in (chexpert.NO_FINDING, chexpert.SUPPORT_DEVICES)) for p in pred]
  start = time.process_time()
  triplets = hard_negatives.cxr_align_triplets(texts, seed=args.seed)
  triplet_time = time.process_time() - start
  made = {t["source_row"] for t in triplets}
  covered = sum(1 for i, a in enumerate(abnormal) if a and i + 1 in made)
  correct = sum(triplet_correct(t) for t in triplets)
  n_abnormal = sum(abnormal)
  print(f"Hard negatives / CXR-Align (seed {args.seed}):")
  print(f"  abnormal reports (labeler): {n_abnormal}; with a triplet: {covered} "
        f"({100 * covered / max(1, n_abnormal):.1f}%); triplets written: {len(triplets)}")
  print(f"  triplets re-labelled correct: {correct}/{len(triplets)} "
        f"({100 * correct / max(1, len(triplets)):.1f}%)")
  for t in triplets[:args.examples]:
    print(f"  --- row {t['source_row']}, entity {t['chosen_entity']}")
    for key in ("report", "negated", "omitted"):
      print(f"    {key}: {t[key]}")
  print(f"Speed (CPU time, one core): labeler {len(texts) / elapsed:.0f} reports/s (best of 3 "
        f"passes); triplet builder {len(texts) / triplet_time:.0f} reports/s")


if __name__ == "__main__":
  main()
