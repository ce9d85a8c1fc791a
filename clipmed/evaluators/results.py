"""results.json and results.md: what one checkpoint's evaluation wrote.

results.json:
  {"<task>/<dataset>/<metric>": {"value": float|null, "ci_low": ..., "ci_high": ...}, ...,
   "_data": {"<dataset>/<split>": {"images": n, "image_id_sha256": hash, "version": v,
                                   "config": name}}}
null is an undefined metric (NaN). "_data" names exactly which images were evaluated, so two users
can see they evaluated the same split (keys starting with "_" are not metrics).

examples/<name>/<dataset>.npz, one per evaluation (compressed numpy, no pickles): the per-example
arrays the task recorded, row i belonging to study_ids[i], with "task", "split", "study_ids",
"labels", "step" and "eval_seed". The task class's `statistics(examples)` recomputes its bootstrap
metrics from them, so paired comparisons between runs and new metrics need no checkpoint
(scripts/compare_results.py).
"""

import glob
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from clipmed.evaluators.base import Metric

DATA_KEY = "_data"


def write(workdir: str, results: Mapping[str, Metric], step: int,
          data: Mapping[str, Any] | None = None, appendix: str = "") -> tuple[str, str]:
  """Writes DIR/results.json and DIR/results.md (overwriting); returns their paths.

  `appendix` (markdown, e.g. the paper's tables) is added to results.md. Call it on one process
  only.
  """
  os.makedirs(workdir, exist_ok=True)
  json_path = os.path.join(workdir, "results.json")
  md_path = os.path.join(workdir, "results.md")
  payload: dict[str, Any] = {
      key: {"value": _json_float(m.value), "ci_low": _json_float(m.ci_low),
            "ci_high": _json_float(m.ci_high)} for key, m in results.items()}
  if data:
    payload[DATA_KEY] = dict(data)
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(payload, f, indent=1)
  with open(md_path, "w", encoding="utf-8") as f:
    f.write(markdown_table(results, step, data) + (("\n" + appendix) if appendix else ""))
  return json_path, md_path


EXAMPLES_DIR = "examples"


def examples_path(workdir: str, name: str, dataset: str) -> str:
  return os.path.join(workdir, EXAMPLES_DIR, name, f"{dataset}.npz")


def write_examples(workdir: str, examples: Mapping[tuple[str, str], Mapping[str, Any]], *,
                   step: int, seed: int) -> list[str]:
  """Writes DIR/examples/<name>/<dataset>.npz per (evaluation name, dataset); returns the paths.

  Files of an earlier evaluation in DIR/examples are removed first, so the directory always
  matches results.json. Each file is written to a temporary name and renamed.
  """
  for stale in glob.glob(os.path.join(workdir, EXAMPLES_DIR, "*", "*.npz")):
    os.remove(stale)
  paths = []
  for (name, dataset), arrays in sorted(examples.items()):
    path = examples_path(workdir, name, dataset)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, step=np.asarray(step), eval_seed=np.asarray(seed),
                        **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
    paths.append(path)
  return paths


def read_examples(workdir: str) -> dict[tuple[str, str], dict[str, np.ndarray]]:
  """{(evaluation name, dataset): arrays} of DIR/examples ({} when there are none)."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, EXAMPLES_DIR, "*", "*.npz"))):
    name = os.path.basename(os.path.dirname(path))
    dataset = os.path.basename(path)[:-len(".npz")]
    with np.load(path, allow_pickle=False) as f:
      out[(name, dataset)] = {k: f[k] for k in f.files}
  return out


def read(path: str) -> tuple[dict[str, Metric], dict[str, Any]]:
  """(metrics, data) of a results.json (NaN for null)."""
  with open(path, encoding="utf-8") as f:
    payload = json.load(f)
  data = payload.pop(DATA_KEY, {})
  nan = float("nan")
  metrics = {key: Metric(*(nan if v[k] is None else float(v[k])
                           for k in ("value", "ci_low", "ci_high")))
             for key, v in payload.items() if not key.startswith("_")}
  return metrics, data


def _json_float(x: float) -> float | None:
  return None if math.isnan(x) else float(x)


def fmt(x: float) -> str:
  return "n/a" if math.isnan(x) else f"{x:.3f}"


def markdown_table(results: Mapping[str, Metric], step: int,
                   data: Mapping[str, Any] | None = None) -> str:
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
        ci = f"[{fmt(m.ci_low)}, {fmt(m.ci_high)}]"
      lines.append(f"| {metric} | {fmt(m.value)} | {ci} |")
    lines.append("")
  if data:
    lines += ["## Evaluated data", "", "| dataset/split | images | sha256 of the sorted ids |",
              "|---|---:|---|"]
    for name, info in data.items():
      digest = next((f"{v[:16]} ({k.removesuffix('_sha256')}s)" for k, v in info.items()
                     if k.endswith("_sha256")), "")
      lines.append(f"| {name} | {info.get('images', '')} | `{digest}` |")
    lines.append("")
  return "\n".join(lines)
