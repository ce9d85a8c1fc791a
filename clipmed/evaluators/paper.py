"""The paper's evaluation suite (Tables 2, 4, 5 and 6 of Ko & Park, CVPR 2025) and its layout.

`paper_evals()` is the config.evals of configs/paper_eval.py: every (task, dataset) the tables
report, on the public benchmarks (each a prepared dataset, input_pipeline/builders/). `TABLES`
lays the results out like the paper's tables: one row per checkpoint, one column per (dataset,
metric); `markdown(results_by_run)` prints them (clipmed.evaluate for one run,
scripts/compare_results.py --paper for several).

Protocols (README, "Reproducing the paper's tables"):
  Table 2, zero-shot: binary AUROC of Pneumonia on RSNA's test split; RSNA-ab = the same among the
    images that are not normal (Normal == 0: pneumonia against the other abnormal images); binary
    AUROC of Pneumothorax on SIIM; top-1 accuracy over the classes on CheXpert 5x200, ChestX-ray14
    and VinDr-CXR, on the images with exactly one of the classes (zero_shot_multiclass).
  Table 2, fine-tuned: a linear probe on the frozen image embeddings trained on 1%, 10% and 100% of
    each dataset's train split, mean AUROC over the same classes on its test split.
  Table 4: image-to-report retrieval (Recall@k, Top-5 precision, labeler P/R/F1) and CXR-Align
    tasks A and B on the MIMIC-CXR, CheXpert Plus and Open-i test splits.
  Table 5: ProbMed-style adversarial questions on ChestX-ray14, with the content-free yardstick
    (the model's answers shuffled across images) next to the accuracy.
  Table 6: normal-case detection on Open-i (one normal report among 2,999 abnormal ones, or as
    many as the split has).
"""

from collections.abc import Mapping, Sequence

import math

import ml_collections

from clipmed.evaluators.base import Metric
from clipmed.evaluators.results import fmt

CXR14_CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                 "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
                 "Pleural_Thickening", "Hernia"]
VINDR_CLASSES = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly",
                 "Clavicle fracture", "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD",
                 "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst", "Mediastinal shift",
                 "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
                 "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor",
                 "Pneumonia", "Tuberculosis", "Other diseases"]
CHEXPERT_5 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
REPORT_DATASETS = ("mimic_cxr", "chexpert_plus", "openi")

# (name, task, dataset, split, task fields)
_CLASSIFICATION = (
    ("rsna", "rsna_pneumonia", dict(classes=["Pneumonia"], prompts="rsna_pneumonia", where={})),
    ("rsna_ab", "rsna_pneumonia", dict(classes=["Pneumonia"], prompts="rsna_pneumonia",
                                       where={"Normal": 0.0})),
    ("siim", "siim_pneumothorax", dict(classes=["Pneumothorax"], prompts="siim_pneumothorax",
                                       where={})),
)
_MULTICLASS = (
    ("chexpert5x200", "chexpert", "test_5x200", CHEXPERT_5, "chexpert"),
    ("cxr14", "cxr14", "test", CXR14_CLASSES, "cxr14"),
    ("vindr", "vindr_cxr", "test", VINDR_CLASSES, "vindr_cxr"),
)
_FINETUNE = (
    ("rsna", "rsna_pneumonia", "test", ["Pneumonia"]),
    ("siim", "siim_pneumothorax", "test", ["Pneumothorax"]),
    ("chexpert", "chexpert", "validation", CHEXPERT_5),
    ("cxr14", "cxr14", "test", CXR14_CLASSES),
    ("vindr", "vindr_cxr", "test", VINDR_CLASSES),
)


def paper_evals(num_bootstrap: int = 1000) -> ml_collections.ConfigDict:
  """config.evals with every (task, dataset) of the paper's Tables 2, 4, 5 and 6."""
  common = dict(every_steps=0, num_bootstrap=num_bootstrap)
  evals = {}
  for name, dataset, fields in _CLASSIFICATION:
    evals[f"zs_{name}"] = dict(task="zero_shot", dataset=dataset, split="test", **fields,
                               **common)
  for name, dataset, split, classes, prompts in _MULTICLASS:
    evals[f"zs_{name}"] = dict(task="zero_shot_multiclass", dataset=dataset, split=split,
                               classes=classes, prompts=prompts, **common)
  for name, dataset, split, classes in _FINETUNE:
    evals[f"ft_{name}"] = dict(task="linear_probe", dataset=dataset, split=split,
                               train_split="train", classes=classes, fractions=(0.01, 0.1, 1.0),
                               weight_decay=1e-4, max_iterations=200, **common)
  for dataset in REPORT_DATASETS:
    evals[f"retrieval_{dataset}"] = dict(task="retrieval", dataset=dataset, split="test",
                                         ks=(1, 5, 10), **common)
    evals[f"cxr_align_{dataset}"] = dict(task="cxr_align", dataset=dataset, split="test",
                                         **common)
  evals["adversarial_cxr14"] = dict(task="adversarial", dataset="cxr14", split="test",
                                    classes=CXR14_CLASSES, prompts="cxr14", prior="train",
                                    calibrate=True, **common)
  evals["normal_openi"] = dict(task="normal_detection", dataset="openi", split="test",
                               num_abnormal=2999, **common)
  return ml_collections.ConfigDict(evals)


def _key(name: str, dataset: str, metric: str) -> str:
  return f"{name}/{dataset}/{metric}"


# Table -> [(column header, result key)].
TABLES: dict[str, list[tuple[str, str]]] = {
    "Table 2: zero-shot classification": [
        ("RSNA AUC", _key("zs_rsna", "rsna_pneumonia", "auroc/pneumonia")),
        ("RSNA-ab AUC", _key("zs_rsna_ab", "rsna_pneumonia", "auroc/pneumonia")),
        ("SIIM AUC", _key("zs_siim", "siim_pneumothorax", "auroc/pneumothorax")),
        ("CheXpert 5x200 ACC", _key("zs_chexpert5x200", "chexpert", "accuracy")),
        ("ChestX-ray14 ACC", _key("zs_cxr14", "cxr14", "accuracy")),
        ("VinDr-CXR ACC", _key("zs_vindr", "vindr_cxr", "accuracy")),
    ],
    "Table 2: fine-tuned classification (linear probe, mean AUC; 1% / 10% / 100% of train)": [
        (f"{label} {pct}%", _key(f"ft_{name}", dataset, f"{pct}pct/mean_auroc"))
        for name, dataset, label in (("rsna", "rsna_pneumonia", "RSNA"),
                                     ("siim", "siim_pneumothorax", "SIIM"),
                                     ("chexpert", "chexpert", "CheXpert"),
                                     ("cxr14", "cxr14", "CXR14"), ("vindr", "vindr_cxr", "VinDr"))
        for pct in (1, 10, 100)],
    "Table 4: retrieval and CXR-Align": [
        (f"{label} {metric}", _key(f"{task}_{dataset}", dataset, key))
        for dataset, label in (("mimic_cxr", "MIMIC"), ("chexpert_plus", "CheXpert+"),
                               ("openi", "Open-i"))
        for task, metric, key in (("retrieval", "R@1", "recall@1"),
                                  ("retrieval", "R@5", "recall@5"),
                                  ("retrieval", "R@10", "recall@10"),
                                  ("retrieval", "P@5", "precision@5"),
                                  ("cxr_align", "Align-A", "task_a"),
                                  ("cxr_align", "Align-B", "task_b"))],
    "Table 5: adversarial prediction (ChestX-ray14)": [
        ("ACC", _key("adversarial_cxr14", "cxr14", "accuracy")),
        ("pos. ACC", _key("adversarial_cxr14", "cxr14", "positive_accuracy")),
        ("neg. ACC", _key("adversarial_cxr14", "cxr14", "negative_accuracy")),
        ("shuffled ACC", _key("adversarial_cxr14", "cxr14", "shuffled_accuracy")),
        ("ACC - shuffled", _key("adversarial_cxr14", "cxr14", "accuracy_over_shuffled")),
    ],
    "Table 6: normal-case detection (Open-i)": [
        ("ACC", _key("normal_openi", "openi", "accuracy")),
        ("chance", _key("normal_openi", "openi", "chance")),
    ],
}


def markdown(results_by_run: Mapping[str, Mapping[str, Metric]],
             tables: Sequence[str] | None = None) -> str:
  """The paper's tables, one row per run ("value [ci_low, ci_high]"; "-" not evaluated).

  Tables without any result in any run are left out.
  """
  lines = []
  for table in tables or list(TABLES):
    columns = TABLES[table]
    if not any(key in results for results in results_by_run.values() for _, key in columns):
      continue
    lines += [f"### {table}", "", "| run | " + " | ".join(h for h, _ in columns) + " |",
              "|---|" + "---:|" * len(columns)]
    for run, results in results_by_run.items():
      cells = []
      for _, key in columns:
        m = results.get(key)
        if m is None:
          cells.append("-")
        elif math.isnan(m.value) or m.ci_low == m.ci_high or math.isnan(m.ci_low):
          cells.append(fmt(m.value))
        else:
          cells.append(f"{fmt(m.value)} [{fmt(m.ci_low)}, {fmt(m.ci_high)}]")
      lines.append(f"| {run} | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)
