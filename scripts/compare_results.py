"""Side-by-side table of several runs' results.json, for the README or a paper draft.

    python scripts/compare_results.py CLIP=workdirs/clip FULL=workdirs/full [--all | --paper]

Prints a markdown table, one row per metric, "value [ci_low, ci_high]" per run. Without --all, only
the headline metrics of each task (the mean AUROCs, Recall@k, CXR-Align, ...). With --paper, the
paper's Tables 2, 4, 5 and 6 (configs/paper_eval.py) with one row per run.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clipmed.evaluators import paper  # noqa: E402
from clipmed.evaluators import results as results_lib  # noqa: E402

HEADLINE = ("zero_shot/{d}/mean_auroc", "zero_shot/{d}/auroc/cardiomegaly",
            "zero_shot/{d}/auroc/pleural_effusion", "zero_shot/{d}/auroc/pneumothorax",
            "zero_shot/{d}/auroc/support_devices",
            "linear_probe/{d}/1pct/mean_auroc", "linear_probe/{d}/10pct/mean_auroc",
            "linear_probe/{d}/100pct/mean_auroc",
            "retrieval/{d}/recall@1", "retrieval/{d}/recall@5", "retrieval/{d}/recall@10",
            "retrieval/{d}/chance@10", "retrieval/{d}/precision@5", "retrieval/{d}/label_f1",
            "cxr_align/{d}/task_a", "cxr_align/{d}/task_b",
            "adversarial/{d}/accuracy", "adversarial/{d}/chance",
            "normal_detection/{d}/accuracy", "normal_detection/{d}/chance")


def _cell(entry) -> str:
  if entry is None or entry["value"] is None:
    return "n/a"
  if entry["ci_low"] == entry["ci_high"] == entry["value"]:
    return f"{entry['value']:.3f}"
  return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", help="NAME=WORKDIR (a directory with results.json)")
  parser.add_argument("--dataset", default="synth_cxr")
  parser.add_argument("--all", action="store_true", help="every metric, not only the headline")
  parser.add_argument("--paper", action="store_true", help="the paper's tables, a row per run")
  args = parser.parse_args(argv)
  names, results = [], []
  for run in args.runs:
    name, sep, workdir = run.partition("=")
    if not sep:
      parser.error(f"{run!r} is not NAME=WORKDIR")
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
      print(f"error: {path} does not exist; run training or clipmed.evaluate first",
            file=sys.stderr)
      return 2
    with open(path, encoding="utf-8") as f:
      results.append({k: v for k, v in json.load(f).items() if not k.startswith("_")})
    names.append(name)
  if args.paper:
    print(paper.markdown({name: results_lib.read(os.path.join(run.partition("=")[2],
                                                              "results.json"))[0]
                          for name, run in zip(names, args.runs)}))
    return 0
  if args.all:
    keys = sorted(set().union(*results))
  else:
    keys = [k.format(d=args.dataset) for k in HEADLINE]
    keys = [k for k in keys if any(k in r for r in results)]
  print("| metric | " + " | ".join(names) + " |")
  print("|---|" + "---|" * len(names))
  for key in keys:
    print(f"| {key} | " + " | ".join(_cell(r.get(key)) for r in results) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
