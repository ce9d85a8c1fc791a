"""Measures clipmed's rule labeler and hard negatives on real reports.

    python scripts/measure_report_quality.py --openi /path/to/openi_dev.csv
    python scripts/measure_report_quality.py --dataset mimic_cxr --data_dir /data/mimic-cxr-jpg
    python scripts/measure_report_quality.py --dataset chexpert_plus --data_dir /data/chexplus

--openi: a CSV with columns uid, findings, impression and the 14 CheXpert categories (1 where a
MeSH code maps to the category, blank otherwise; blank means "not coded", not negative); with a
mesh column, two codings the CSV maps against its own (CheXpert's) definitions are corrected
(openi_reference.REFERENCE_CORRECTIONS; --raw_reference keeps the CSV as it is): an enlarged
cardiac shadow is Cardiomegaly (CheXpert's Cardiomegaly mentions include the cardiac shadow and
silhouette), and a Lung Lesion that comes only from calcified nodules is dropped (the
reference's own rule that a calcified granuloma is not a lung lesion, CheXpert's "calcified
nodul" unmention). Prints:
  * labels: per-category F1 of "positive or uncertain" against the MeSH positives, and the macro
    F1 over the eight categories the acceptance criterion names, on the develop half, the
    held-out half and the whole file. The halves are fixed by a hash of the uid
    (openi_reference.split_half), so rules tuned on the develop half can be checked on reports
    they were not tuned on;
  * hard negatives: the share of abnormal reports that get a CXR-Align triplet, and the triplets
    that fail a check (re-labelled: the chosen entity negative in r^n and not mentioned in r^r,
    every other category (No Finding aside) unchanged; r^r not empty; r^n not equal to r);
  * speed: reports per second of the labeler on one core (CPU time of this process);
  * with --errors develop | held-out | all: each report of that half where the labels and the
    reference disagree on a starred category, with the sentences behind the label.
With --chexbert chexbert.pth --vocab bert-base-uncased/ (the optional CheXbert labeler) it also
prints CheXbert's F1 against MeSH and its per-category agreement with the rules; with --radgraph
(the optional `radgraph` package and its model) the agreement of the rule graphs with RadGraph's
nodes, per node type.

--dataset mimic_cxr | chexpert_plus with --data_dir (the download, laid out as the builders in
input_pipeline/builders expect it): labels each study's FINDINGS + IMPRESSION with clipmed's rules
and prints the per-category agreement with the labels shipped with the dataset (MIMIC-CXR:
mimic-cxr-2.0.0-chexpert.csv and, when present, -negbio.csv; CheXpert Plus:
chexbert_labels/report_fixed.json).

The data stays outside the repository; pass its path.
"""

import argparse
from collections import Counter
import dataclasses
import math
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clipmed.errors import UserError  # noqa: E402
from clipmed.evaluators import metrics  # noqa: E402
from clipmed.report import chexpert  # noqa: E402
from clipmed.report import hard_negatives  # noqa: E402
from clipmed.report import labeler  # noqa: E402
from clipmed.report import sections  # noqa: E402
import openi_reference  # noqa: E402  (scripts/, beside this file)

MACRO_CATEGORIES = ("No Finding", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Atelectasis",
                    "Pleural Effusion", "Fracture", "Support Devices")
DATASETS = ("mimic_cxr", "chexpert_plus")


def _mentioned(labels: np.ndarray) -> np.ndarray:
  """[N, 14] labels in the labeler convention -> bool positive or uncertain, what F1 scores."""
  return (labels == chexpert.POSITIVE) | (labels == chexpert.UNCERTAIN)


def label_f1(pred: np.ndarray, reference: np.ndarray) -> dict[str, tuple[int, int, int, float]]:
  """Per category: (tp, fp, fn, F1) of positive-or-uncertain against reference positive-or-
  uncertain (both [N, 14] in the labeler convention)."""
  hit, ref = _mentioned(pred), _mentioned(reference)
  out = {}
  for j, name in enumerate(chexpert.CATEGORIES):
    tp = int(np.sum(hit[:, j] & ref[:, j]))
    fp = int(np.sum(hit[:, j] & ~ref[:, j]))
    fn = int(np.sum(~hit[:, j] & ref[:, j]))
    out[name] = (tp, fp, fn, 2 * tp / max(1, 2 * tp + fp + fn))
  return out


def macro_f1(scores: dict[str, tuple[int, int, int, float]]) -> float:
  """Mean F1 over the MACRO_CATEGORIES that either side finds (all eight on Open-i)."""
  found = [scores[n][3] for n in MACRO_CATEGORIES if sum(scores[n][:3])]
  return float(np.mean(found)) if found else float("nan")


def f1_intervals(pred: np.ndarray, reference: np.ndarray, num_bootstrap: int = 1000,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
  """95% percentile-bootstrap intervals (the evaluation's metrics.bootstrap over the reports) of
  label_f1's F1 per category and of macro_f1 ("macro"); a category neither side finds in a
  resample is left out of that resample's macro mean and of its own interval, as macro_f1 and
  _f1_text do. Seeded: the same reports give the same intervals."""
  hit, ref = _mentioned(pred), _mentioned(reference)
  counts = [(a & b).astype(np.float64) for a, b in ((hit, ref), (hit, ~ref), (~hit, ref))]
  macro_columns = [chexpert.INDEX[n] for n in MACRO_CATEGORIES]

  def stat_fn(w):  # [R, N] report weights -> {name: [R]}
    tp, fp, fn = (w @ c for c in counts)
    with np.errstate(invalid="ignore", divide="ignore"):
      f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)  # [R, 14]
    out = {name: f1[:, j] for j, name in enumerate(chexpert.CATEGORIES)}
    out["macro"] = np.nanmean(f1[:, macro_columns], axis=1)
    return out
  intervals = metrics.bootstrap(stat_fn, len(pred), num_resamples=num_bootstrap, seed=seed)
  return {name: (m.ci_low, m.ci_high) for name, m in intervals.items()}


def _f1_text(score: tuple[int, int, int, float], width: int) -> str:
  """The F1, or "-" when neither side finds the category."""
  return f"{score[3]:{width}.3f}" if sum(score[:3]) else f"{'-':>{width}s}"


def _same(a: float, b: float) -> bool:
  return a == b or (math.isnan(a) and math.isnan(b))


def triplet_problem(row: dict[str, str]) -> str:
  """Why a written triplet is degenerate or wrong ("" when it is fine), from its texts alone."""
  if not row["omitted"].strip():
    return "empty omitted report"
  if row["negated"].strip() == row["report"].strip():
    return "negated report equals the report"
  entity = chexpert.INDEX[row["chosen_entity"]]
  ref = labeler.label_report(row["report"])
  neg = labeler.label_report(row["negated"])
  omi = labeler.label_report(row["omitted"])
  if neg[entity] != chexpert.NEGATIVE:
    return "entity not negative in the negated report"
  if not math.isnan(omi[entity]):
    return "entity still mentioned in the omitted report"
  if not all(_same(float(ref[i]), float(neg[i])) and _same(float(ref[i]), float(omi[i]))
             for i in range(chexpert.NUM_CATEGORIES) if i not in (entity, chexpert.NO_FINDING)):
    return "a second category changed"
  return ""


def _print_f1_table(pred: np.ndarray, mesh: np.ndarray, halves: list[str],
                    who: str = "Labels") -> None:
  masks = {"develop": np.array([h == "develop" for h in halves]),
           "held-out": np.array([h == "held-out" for h in halves]),
           "all": np.ones(len(halves), bool)}
  scores = {k: label_f1(pred[m], mesh[m]) for k, m in masks.items()}
  print(f"{who}: F1 of positive-or-uncertain vs MeSH positives; develop {masks['develop'].sum()}"
        f", held-out {masks['held-out'].sum()}, all {len(halves)} reports")
  print(f"  {'category':28s} {'MeSH+':>6s} {'tp':>5s} {'fp':>5s} {'fn':>5s} "
        f"{'F1 dev':>7s} {'F1 held':>7s} {'F1 all':>7s}")
  for name in chexpert.CATEGORIES:
    tp, fp, fn, _ = scores["all"][name]
    mark = "*" if name in MACRO_CATEGORIES else " "
    print(f" {mark}{name:28s} {tp + fn:6d} {tp:5d} {fp:5d} {fn:5d} "
          + " ".join(_f1_text(scores[k][name], 7) for k in masks))
  print("  macro F1, 8 starred categories: "
        + ", ".join(f"{k} {macro_f1(scores[k]):.3f}" for k in masks))
  intervals = {k: f1_intervals(pred[m], mesh[m]) for k, m in masks.items()}
  print("  95% bootstrap intervals (1000 resamples of each half's reports):")
  for name in ("macro",) + MACRO_CATEGORIES:
    print(f"    {name:28s} " + ", ".join(
        f"{k} [{intervals[k][name][0]:.3f}, {intervals[k][name][1]:.3f}]" for k in masks))


_STATUS_NAMES = {chexpert.POSITIVE: "positive", chexpert.NEGATIVE: "negative",
                 chexpert.UNCERTAIN: "uncertain"}


def print_errors(reports: openi_reference.OpenIReports, pred: np.ndarray, halves: list[str],
                 half: str) -> None:
  """Prints every report of `half` ("all": both) where the labels and the reference disagree on
  a starred category: the kind of error, the reference's codes, and each sentence that
  mentions the category with the status the rules read there (for No Finding: every finding
  not read as negative; the whole text when there is no such sentence)."""
  hit, ref = _mentioned(pred), _mentioned(reports.positives)
  print(f"Errors, {half} reports (FP: labels positive or uncertain, reference not; FN: the "
        "other way round):")
  for name in MACRO_CATEGORIES:
    k = chexpert.INDEX[name]
    for i, uid in enumerate(reports.uids):
      if half not in ("all", halves[i]) or hit[i, k] == ref[i, k]:
        continue
      kind = "FN" if ref[i, k] else f"FP ({_STATUS_NAMES[float(pred[i, k])]})"
      print(f"  --- {name} {kind}, uid {uid} ({halves[i]}); reference codes: "
            f"{reports.codes[i] or '-'}")
      said = [(sentence, m) for sentence, m in labeler.sentences_with_mentions(
          labeler.report_sentences(reports.texts[i]))
              if m.category == k or (k == chexpert.NO_FINDING
                                     and m.status != chexpert.NEGATIVE)]
      for sentence, m in said:
        print(f"    {chexpert.CATEGORIES[m.category]}, {_STATUS_NAMES[m.status]} "
              f"\"{sentence[m.start:m.end]}\": {sentence}")
      if not said:
        print(f"    (no mention) {reports.texts[i]}")


def measure_openi(path: str, seed: int, examples: int, *, chexbert: str = "", vocab: str = "",
                  chexbert_heads: int = 12, radgraph: bool = False,
                  raw_reference: bool = False, errors: str = "") -> None:
  reports = openi_reference.read_openi(path, correct=not raw_reference)
  texts, mesh = reports.texts, reports.positives
  # Speed: CPU time of this (single-threaded) process, best of three passes, so that other
  # processes on a shared machine count against the labeler as little as possible.
  elapsed = float("inf")
  for _ in range(3):
    start = time.process_time()
    pred = labeler.label_reports(texts)
    elapsed = min(elapsed, time.process_time() - start)
  halves = [openi_reference.split_half(u) for u in reports.uids]
  print("Reference" + (" as the CSV has it (--raw_reference)" if raw_reference else "") + ":"
        + "".join(f"\n  {n} reports {name}" for name, n in reports.corrected.items()))
  _print_f1_table(pred, mesh, halves)
  if errors:
    print_errors(reports, pred, halves, errors)
  if chexbert:
    from clipmed.report import chexbert_labeler  # heavy imports only when asked for
    other = chexbert_labeler.CheXbertLabeler.from_checkpoint(
        chexbert, vocab, num_heads=chexbert_heads).label(texts)
    _print_f1_table(other, mesh, halves, who="CheXbert")
    _print_agreement("CheXbert labels", "rules", agreement_table(pred, other))
  if radgraph:
    from clipmed.report import graph as graph_lib
    from clipmed.report import radgraph_adapter
    theirs = radgraph_adapter.RadGraphExtractor()(texts)
    ours = [graph_lib.extract_graph(t) for t in texts]
    print(f"Graphs: rule nodes vs RadGraph nodes (same words and type), {len(texts)} reports")
    print(f"  {'node type':10s} {'RadGraph':>9s} {'rules':>7s} {'both':>6s} {'F1':>6s}")
    for kind, (n_theirs, n_ours, both, f1) in compare_graph_nodes(ours, theirs).items():
      print(f"  {kind:10s} {n_theirs:9d} {n_ours:7d} {both:6d} {f1:6.3f}")

  abnormal = [hard_negatives.is_abnormal(p) for p in pred]
  start = time.process_time()
  triplets = hard_negatives.cxr_align_triplets(texts, seed=seed)
  triplet_time = time.process_time() - start
  made = {t["source_row"] for t in triplets}
  covered = sum(1 for i, a in enumerate(abnormal) if a and i + 1 in made)
  problems: dict[str, int] = {}
  for t in triplets:
    problem = triplet_problem(t)
    if problem:
      problems[problem] = problems.get(problem, 0) + 1
  n_abnormal = sum(abnormal)
  print(f"Hard negatives / CXR-Align (seed {seed}):")
  print(f"  abnormal reports (labeler): {n_abnormal}; with a triplet: {covered} "
        f"({100 * covered / max(1, n_abnormal):.1f}%); triplets written: {len(triplets)}")
  print(f"  triplets failing a check: {sum(problems.values())}/{len(triplets)}"
        + "".join(f"; {k}: {v}" for k, v in sorted(problems.items())))
  for t in triplets[:examples]:
    print(f"  --- row {t['source_row']}, entity {t['chosen_entity']}")
    for key in ("report", "negated", "omitted"):
      print(f"    {key}: {t[key]}")
  print(f"Speed (CPU time, one core): labeler {len(texts) / elapsed:.0f} reports/s (best of 3 "
        f"passes); triplet builder {len(texts) / triplet_time:.0f} reports/s")


@dataclasses.dataclass
class LabeledReports:
  """Reports of a dataset with the label sets it ships: name -> {study key: float32 [14]}."""
  reports: dict[str, str]
  label_sets: dict[str, dict[str, np.ndarray]]


def read_mimic_cxr(data_dir: str) -> LabeledReports:
  """MIMIC-CXR reports (zip or files/ tree) and mimic-cxr-2.0.0-{chexpert,negbio}.csv(.gz)."""
  from input_pipeline.builders import listing  # the builders own the layouts
  from input_pipeline.builders import mimic_cxr
  paths = {}
  for name in ("chexpert", "negbio"):
    found = [p for p in (os.path.join(data_dir, f"mimic-cxr-2.0.0-{name}{suffix}")
                         for suffix in (".csv.gz", ".csv")) if os.path.isfile(p)]
    if found:
      paths[name] = found[0]
  if not paths:
    raise UserError(f"mimic_cxr: no mimic-cxr-2.0.0-chexpert.csv(.gz) nor -negbio.csv(.gz) in "
                    f"{data_dir}; pass the MIMIC-CXR-JPG folder that holds them")
  label_sets, subject_of = {}, {}
  for name, path in paths.items():
    label_sets[name] = mimic_cxr._read_labels(path)  # pylint: disable=protected-access
    _, rows = listing.read_csv(path)
    subject_of.update((r["study_id"].strip(), r["subject_id"].strip()) for r in rows)
  reports = mimic_cxr._Reports(data_dir)  # pylint: disable=protected-access
  texts = {}
  for study, subject in sorted(subject_of.items()):
    text, problem = reports.read(subject, study)
    if not problem and text.strip():
      texts[study] = sections.clinical_text(text)
  return LabeledReports(texts, label_sets)


def read_chexpert_plus(data_dir: str) -> LabeledReports:
  """CheXpert Plus reports (df_chexpert_plus_*.csv) and chexbert_labels/report_fixed.json."""
  from input_pipeline.builders import chexpert as chexpert_builder
  from input_pipeline.builders import chexpert_plus
  from input_pipeline.builders import listing
  path = os.path.join(data_dir, chexpert_plus.INDEX)
  if not os.path.isfile(path):
    raise UserError(f"chexpert_plus: {path} not found; pass the CheXpert Plus folder")
  labels = None
  for name in chexpert_plus.CHEXBERT_FILES:
    label_path = os.path.join(data_dir, name)
    if os.path.isfile(label_path):
      with open(label_path, "rb") as f:
        labels = chexpert_plus.read_chexbert(f, label_path)
      break
  if labels is None:
    raise UserError(f"chexpert_plus: no {chexpert_plus.CHEXBERT_FILES[0]} in {data_dir}; "
                    "download chexbert_labels from the CheXpert Plus page")
  header, rows = listing.read_csv(path)
  listing.require_columns(path, header, chexpert_plus.COLUMNS)
  # One report per study (its images share it), keyed by the study's first labelled image.
  texts, studies = {}, set()
  for row in rows:
    key = chexpert_builder.image_key(row["path_to_image"].strip().replace("\\", "/"))
    findings, impression = chexpert_plus._report(row)  # pylint: disable=protected-access
    study = key.rsplit("/", 1)[0]
    if key in labels and study not in studies and (findings or impression):
      texts[key] = sections.join_fields(findings, impression)
      studies.add(study)
  return LabeledReports(texts, {"chexbert": labels})


def agreement_table(pred: np.ndarray, reference: np.ndarray) -> list[tuple]:
  """Per category: (name, reference pos-or-unc, clipmed pos-or-unc, F1, exact status agreement).

  Args:
    pred: [N, 14] clipmed labels; reference: [N, 14] the dataset's, both labeler convention.
  """
  scores = label_f1(pred, reference)
  out = []
  for j, name in enumerate(chexpert.CATEGORIES):
    tp, fp, fn, f1 = scores[name]
    same = np.mean([_same(float(a), float(b)) for a, b in zip(pred[:, j], reference[:, j])])
    out.append((name, tp + fn, tp + fp, f1, float(same)))
  return out


def measure_dataset(dataset: str, data_dir: str) -> None:
  if not os.path.isdir(data_dir):
    raise UserError(f"--data_dir {data_dir} is not a folder")
  data = read_mimic_cxr(data_dir) if dataset == "mimic_cxr" else read_chexpert_plus(data_dir)
  for source, labels in data.label_sets.items():
    keys = sorted(k for k in labels if k in data.reports)
    if not keys:
      print(f"{dataset} {source}: no study has both a report and labels")
      continue
    pred = labeler.label_reports([data.reports[k] for k in keys])
    reference = np.stack([labels[k] for k in keys])
    print(f"{dataset}: clipmed's rules vs the shipped {source} labels, {len(keys)} reports")
    _print_agreement(source, "clipmed", agreement_table(pred, reference))


def _print_agreement(reference: str, predicted: str, rows: list[tuple]) -> None:
  """Prints agreement_table rows."""
  print(f"  {'category':28s} {reference + '+':>16s} {predicted + '+':>9s} {'F1':>6s} "
        f"{'same status':>11s}")
  for name, n_ref, n_pred, f1, same in rows:
    mark = "*" if name in MACRO_CATEGORIES else " "
    shown = f"{f1:6.3f}" if n_ref + n_pred else f"{'-':>6s}"
    print(f" {mark}{name:28s} {n_ref:16d} {n_pred:9d} {shown} {100 * same:10.1f}%")
  scored = [r[3] for r in rows if r[0] in MACRO_CATEGORIES and r[1] + r[2]]
  print(f"  macro F1, the {len(scored)} starred categories either side finds: "
        f"{np.mean(scored) if scored else float('nan'):.3f}")
  print("  (+ = positive or uncertain; same status = identical 1 / 0 / -1 / blank; F1 '-' "
        "when neither finds the category)")


def compare_graph_nodes(ours: Sequence, theirs: Sequence
                        ) -> dict[str, tuple[int, int, int, float]]:
  """Per node type: (their nodes, our nodes, in both, F1) over all reports, a node being its
  lower-cased words and type (each report's nodes as a multiset)."""
  out = {}
  for kind in ("ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA"):
    n_ours = n_theirs = both = 0
    for a, b in zip(ours, theirs):
      mine = Counter(" ".join(t.lower().split()) for t, k in a.nodes if k == kind)
      other = Counter(" ".join(t.lower().split()) for t, k in b.nodes if k == kind)
      n_ours, n_theirs = n_ours + sum(mine.values()), n_theirs + sum(other.values())
      both += sum((mine & other).values())
    out[kind] = (n_theirs, n_ours, both, 2 * both / max(1, n_ours + n_theirs))
  return out


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--openi", default="", help="CSV of Open-i reports with MeSH labels")
  parser.add_argument("--dataset", choices=DATASETS, default=None,
                      help="compare with the labels a downloaded dataset ships")
  parser.add_argument("--data_dir", default="", help="the dataset's download folder")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--examples", type=int, default=0, help="print this many triplets")
  parser.add_argument("--chexbert", default="",
                      help="with --openi: also run CheXbert from this chexbert.pth")
  parser.add_argument("--vocab", default="",
                      help="bert-base-uncased vocab.txt or tokenizer folder for --chexbert")
  parser.add_argument("--chexbert_heads", type=int, default=12,
                      help="attention heads of the CheXbert checkpoint (12 for BERT-base)")
  parser.add_argument("--raw_reference", action="store_true",
                      help="with --openi: score against the CSV's categories as they are, "
                           "without openi_reference.REFERENCE_CORRECTIONS")
  parser.add_argument("--errors", choices=openi_reference.HALVES + ("all",), default=None,
                      help="with --openi: print the reports of this half where the labels and "
                           "the reference disagree, with the sentences behind each label")
  parser.add_argument("--radgraph", action="store_true",
                      help="with --openi: also compare the rule graphs with RadGraph's")
  args = parser.parse_args(argv)
  try:
    if bool(args.openi) == bool(args.dataset):
      raise UserError("pass either --openi CSV or --dataset NAME --data_dir DIR")
    if args.chexbert and not args.vocab:
      raise UserError("--chexbert needs --vocab (bert-base-uncased's vocab.txt or folder)")
    if args.openi:
      measure_openi(args.openi, args.seed, args.examples, chexbert=args.chexbert,
                    vocab=args.vocab, chexbert_heads=args.chexbert_heads,
                    radgraph=args.radgraph, raw_reference=args.raw_reference,
                    errors=args.errors or "")
    else:
      if not args.data_dir:
        raise UserError(f"--dataset {args.dataset} needs --data_dir (the download folder)")
      measure_dataset(args.dataset, args.data_dir)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
