"""Compare runs: side-by-side metrics, paired bootstrap differences, seeds, plots.

    python scripts/compare_results.py CLIP=workdirs/clip FULL=workdirs/full [--all | --paper]
    python scripts/compare_results.py CLIP=workdirs/clip_s0,workdirs/clip_s1,workdirs/clip_s2 \\
        FULL=workdirs/full_s0,workdirs/full_s1,workdirs/full_s2 --plot compare.png

Each row is NAME=WORKDIR, or NAME=WORKDIR,WORKDIR,... for several seeds of one configuration (a
WORKDIR may be a quoted glob: 'CLIP=workdirs/table2/clip/seed*'). `--runs-dir DIR` takes every
subdirectory of DIR as a row named after it: DIR/<row> holding results.json is one run,
DIR/<row>/<seed> several (the layout of the README's Table 2 command).

1. The metrics table: one column per row; "value [ci_low, ci_high]" for a single workdir (the
   interval of its results.json), "mean +- sd (n seeds)" for several (sd: sample standard
   deviation over the seeds, the seed-to-seed spread).
2. Paired differences against the first row (or --baseline NAME): metric(row) - metric(baseline)
   on the same test images, with a 95% bootstrap interval whose resamples of the images are shared
   by both rows (paired), computed from the per-example arrays each evaluation saved in
   WORKDIR/examples/ (clipmed/evaluators/results.py). With several seeds per row, the difference
   of the seed means, each resample applied to every seed. A comparison whose evaluations were
   run on different example ids is refused.
3. --plot out.png: one panel per metric, one bar per row with its interval (the 95% CI of a single
   run, or the mean with +- sd and each seed as a dot).
4. --rates-plot out.png: the zero-shot yes/no decision against the truth, one panel per row: each
   class's positive rate against its prevalence (seed means), with the lines rate = prevalence
   and rate = 2 x prevalence; a point above the dashed line is a finding answered "yes" more
   than twice as often as it occurs.

Without --all, only the headline metrics of each task (the mean AUROCs, within-image
discrimination, Recall@k, CXR-Align, adversarial with its shuffled baseline, ...). With --paper,
the paper's Tables 2, 4, 5 and 6 (configs/paper_eval.py) with one row per (single-workdir) run.
"""

import argparse
import glob
import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clipmed.errors import UserError  # noqa: E402
from clipmed.evaluators import EVALUATORS, paper  # noqa: E402
from clipmed.evaluators import metrics as metrics_lib  # noqa: E402
from clipmed.evaluators import results as results_lib  # noqa: E402
from clipmed.evaluators.base import Metric  # noqa: E402

HEADLINE = ("zero_shot/{d}/mean_auroc", "zero_shot/{d}/auroc/cardiomegaly",
            "zero_shot/{d}/auroc/pleural_effusion", "zero_shot/{d}/auroc/pneumothorax",
            "zero_shot/{d}/auroc/support_devices",
            "zero_shot/{d}/within_image", "zero_shot/{d}/max_rate_over_prevalence",
            "zero_shot/{d}/image_mean_share",
            "linear_probe/{d}/1pct/mean_auroc", "linear_probe/{d}/10pct/mean_auroc",
            "linear_probe/{d}/100pct/mean_auroc",
            "retrieval/{d}/recall@1", "retrieval/{d}/recall@5", "retrieval/{d}/recall@10",
            "retrieval/{d}/chance@10", "retrieval/{d}/precision@5", "retrieval/{d}/label_f1",
            "cxr_align/{d}/task_a", "cxr_align/{d}/task_b",
            "adversarial/{d}/accuracy", "adversarial/{d}/shuffled_accuracy",
            "adversarial/{d}/accuracy_over_shuffled",
            "adversarial/{d}/positive_accuracy", "adversarial/{d}/negative_accuracy",
            "normal_detection/{d}/accuracy", "normal_detection/{d}/chance")
NUM_BOOTSTRAP = 1000


class Row:
  """One configuration: a name and the results (and saved examples) of one or more seeds."""

  def __init__(self, name: str, workdirs: Sequence[str]):
    self.name = name
    self.workdirs = list(workdirs)
    self.results: list[dict[str, Metric]] = []
    for workdir in self.workdirs:
      path = os.path.join(workdir, "results.json")
      if not os.path.exists(path):
        raise UserError(f"{path} does not exist; train the run or evaluate its checkpoint with "
                        "python -m clipmed.evaluate first")
      self.results.append(results_lib.read(path)[0])
    self._examples: list[dict] | None = None

  @property
  def examples(self) -> list[dict[tuple[str, str], dict[str, np.ndarray]]]:
    if self._examples is None:
      self._examples = [results_lib.read_examples(w) for w in self.workdirs]
    return self._examples

  def values(self, key: str) -> np.ndarray:
    """The metric's value in each seed (NaN where missing or undefined)."""
    return np.array([r[key].value if key in r else np.nan for r in self.results])


def _expand(pattern: str) -> list[str]:
  if not glob.has_magic(pattern):
    return [pattern]
  matches = sorted(glob.glob(pattern))
  if not matches:
    raise UserError(f"{pattern!r} matches no directory")
  return matches


def rows_from_dir(runs_dir: str) -> list[str]:
  """NAME=WORKDIR[,...] specs for the subdirectories of `runs_dir` (module docstring)."""
  if not os.path.isdir(runs_dir):
    raise UserError(f"--runs-dir {runs_dir} is not a directory")
  specs = []
  for name in sorted(os.listdir(runs_dir)):
    path = os.path.join(runs_dir, name)
    if not os.path.isdir(path):
      continue
    if os.path.exists(os.path.join(path, "results.json")):
      specs.append(f"{name}={path}")
      continue
    seeds = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(path, "*", "results.json")))
    if seeds:
      specs.append(f"{name}=" + ",".join(seeds))
  if not specs:
    raise UserError(f"no results.json under {runs_dir}/<row>/ or {runs_dir}/<row>/<seed>/")
  return specs


def parse_rows(specs: Sequence[str]) -> list[Row]:
  rows = []
  for spec in specs:
    name, sep, dirs = spec.partition("=")
    workdirs = [w for d in dirs.split(",") if d for w in _expand(d)]
    if not sep or not name or not workdirs:
      raise UserError(f"{spec!r} is not NAME=WORKDIR or NAME=WORKDIR,WORKDIR,...")
    rows.append(Row(name, workdirs))
  names = [r.name for r in rows]
  if len(set(names)) != len(names):
    raise UserError(f"row names must differ, got {names}")
  return rows


def cell(row: Row, key: str) -> str:
  values = row.values(key)
  if np.all(np.isnan(values)):
    return "n/a"
  if len(values) == 1:
    m = row.results[0][key]
    if math.isnan(m.ci_low) or m.ci_low == m.ci_high:
      return results_lib.fmt(m.value)
    return f"{m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"
  finite = values[~np.isnan(values)]
  spread = np.std(finite, ddof=1) if finite.size > 1 else float("nan")
  return f"{np.mean(finite):.3f} +- {spread:.3f} ({finite.size} seeds)"


def _aligned(examples: Sequence[Mapping[str, np.ndarray]], reference: np.ndarray,
             where: str) -> list[dict[str, np.ndarray]]:
  """Each seed's arrays reordered to the reference's study ids; UserError when the ids differ."""
  out = []
  for ex in examples:
    ids = ex["study_ids"]
    if ids.shape != reference.shape or set(ids.tolist()) != set(reference.tolist()):
      raise UserError(f"{where}: the runs were evaluated on different examples ({ids.size} vs "
                      f"{reference.size} ids, {len(set(ids.tolist()) ^ set(reference.tolist()))} "
                      "not shared); a paired comparison needs the same test images")
    if np.array_equal(ids, reference):
      out.append(dict(ex))
      continue
    order = np.argsort(ids)[np.searchsorted(np.sort(ids), reference)]
    out.append({k: (v[order] if v.ndim >= 1 and v.shape[0] == ids.size and k != "ks"
                    and k != "classes" and k != "fractions" else v) for k, v in ex.items()})
  return out


def _seed_mean(stat_fns):
  """w -> {metric: mean over the seeds' statistics} (each seed sees the same resample)."""
  def stat_fn(w):
    per_seed = [fn(w) for fn in stat_fns]
    keys = [k for k in per_seed[0] if all(k in s for s in per_seed)]
    return {k: np.mean(np.stack([np.asarray(s[k], np.float64) for s in per_seed]), axis=0)
            for k in keys}
  return stat_fn


def paired_differences(baseline: Row, row: Row, *, seed: int = 0,
                       num_resamples: int = NUM_BOOTSTRAP) -> dict[str, Metric]:
  """{"<name>/<dataset>/<metric>": metric(row) - metric(baseline)} with paired 95% intervals.

  Uses the evaluations saved by every workdir of both rows; those whose task cannot recompute
  its metrics from saved examples are skipped.

  Raises:
    UserError: when a row has no saved examples, or an evaluation's example ids differ.
  """
  for r in (baseline, row):
    for workdir, ex in zip(r.workdirs, r.examples):
      if not ex:
        raise UserError(f"{workdir} has no saved per-example scores ({results_lib.EXAMPLES_DIR}/); "
                        "re-evaluate it with python -m clipmed.evaluate")
  common = set.intersection(*(set(ex) for r in (baseline, row) for ex in r.examples))
  out = {}
  for name, dataset in sorted(common):
    task = str(baseline.examples[0][(name, dataset)]["task"])
    evaluator = EVALUATORS.get(task)
    if evaluator is None:
      continue
    reference = baseline.examples[0][(name, dataset)]["study_ids"]
    where = f"{name}/{dataset} of {baseline.name} and {row.name}"
    fns = []
    for r in (baseline, row):
      seeds = _aligned([ex[(name, dataset)] for ex in r.examples], reference, where)
      try:
        fns.append(_seed_mean([evaluator.statistics(ex) for ex in seeds]))
      except NotImplementedError:
        break
    if len(fns) < 2:
      continue

    def diff(w, a=fns[0], b=fns[1]):
      sa, sb = a(w), b(w)
      with np.errstate(invalid="ignore"):
        return {k: np.asarray(sb[k]) - np.asarray(sa[k]) for k in sa if k in sb}

    for metric, m in metrics_lib.bootstrap(diff, reference.size, num_resamples=num_resamples,
                                           seed=seed).items():
      out[f"{name}/{dataset}/{metric}"] = m
  return out


def _pyplot():
  """matplotlib's pyplot on the file-only Agg backend (imported when a plot is asked for)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(plt, fig, path: str) -> None:
  """Writes the figure to `path` (creating its folder) and closes it."""
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot(rows: Sequence[Row], keys: Sequence[str], path: str) -> None:
  """One panel per metric, one bar per row: the single run's 95% CI, or mean +- sd over seeds
  with each seed as a dot."""
  plt = _pyplot()

  cols = min(4, len(keys))
  nrows = math.ceil(len(keys) / cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.8 * nrows), squeeze=False)
  x = np.arange(len(rows))
  for ax, key in zip(axes.ravel(), keys):
    heights, low, high = [], [], []
    for row in rows:
      values = row.values(key)
      if len(values) == 1 and key in row.results[0]:
        m = row.results[0][key]
        heights.append(m.value)
        low.append(m.value - m.ci_low if not math.isnan(m.ci_low) else 0.0)
        high.append(m.ci_high - m.value if not math.isnan(m.ci_high) else 0.0)
      else:
        finite = values[~np.isnan(values)]
        mean = float(np.mean(finite)) if finite.size else float("nan")
        sd = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
        heights.append(mean)
        low.append(sd)
        high.append(sd)
        ax.plot(np.full(finite.size, x[len(heights) - 1]), finite, "k.", markersize=4)
    ax.bar(x, heights, yerr=[low, high], capsize=3, color="#8fb3d9", edgecolor="#2d5f8b")
    ax.set_xticks(x, [r.name for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_title(key, fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
  for ax in axes.ravel()[len(keys):]:
    ax.axis("off")
  _save(plt, fig, path)


def decision_rates(row: Row, dataset: str) -> list[tuple[str, float, float]]:
  """[(class slug, prevalence, positive rate)] of the zero-shot decision, seed means.

  Raises:
    UserError: the row's results have no decision rates for the dataset.
  """
  prefix = f"zero_shot/{dataset}/positive_rate/"
  slugs = sorted({k[len(prefix):] for res in row.results for k in res if k.startswith(prefix)})
  if not slugs:
    raise UserError(f"{row.name}: results.json has no zero_shot/{dataset}/positive_rate/* (a "
                    "zero-shot evaluation with two or more classes writes them); check --dataset")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN: a class without rows
    return [(slug, float(np.nanmean(row.values(f"zero_shot/{dataset}/prevalence/{slug}"))),
             float(np.nanmean(row.values(prefix + slug)))) for slug in slugs]


def rates_plot(rows: Sequence[Row], dataset: str, path: str) -> None:
  """One panel per row: positive rate against prevalence per class (module docstring, 4)."""
  plt = _pyplot()

  rates = [decision_rates(row, dataset) for row in rows]
  top = max(max(p, r) for table in rates for _, p, r in table if not math.isnan(p + r))
  top = 1.05 * top if top > 0 else 1.0
  fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.6), squeeze=False)
  for ax, row, table in zip(axes[0], rows, rates):
    line = np.array([0.0, top])
    ax.plot(line, line, color="0.4", linewidth=1, label="rate = prevalence")
    ax.plot(line, 2 * line, color="0.4", linewidth=1, linestyle="--", label="2 x prevalence")
    for slug, prevalence, rate in table:
      color = "#c0392b" if rate > 2 * prevalence else "#2d5f8b"
      ax.plot(prevalence, rate, "o", color=color, markersize=4)
      ax.annotate(slug, (prevalence, rate), fontsize=6, xytext=(3, 2), textcoords="offset points")
    seeds = f" ({len(row.workdirs)} seeds)" if len(row.workdirs) > 1 else ""
    ax.set_title(row.name + seeds, fontsize=8)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("prevalence", fontsize=7)
    ax.set_ylabel('"yes" rate', fontsize=7)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="lower right")
  _save(plt, fig, path)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="*",
                      help="NAME=WORKDIR or NAME=WORKDIR,WORKDIR,... (seeds); each with "
                           "results.json")
  parser.add_argument("--runs-dir", default=None,
                      help="take every subdirectory as a row: DIR/<row> or DIR/<row>/<seed>")
  parser.add_argument("--dataset", default="synth_cxr")
  parser.add_argument("--all", action="store_true", help="every metric, not only the headline")
  parser.add_argument("--paper", action="store_true", help="the paper's tables, a row per run")
  parser.add_argument("--baseline", default=None,
                      help="row that paired differences are taken against (default: the first)")
  parser.add_argument("--no-paired", action="store_true",
                      help="skip the paired differences (they need the saved examples)")
  parser.add_argument("--seed", type=int, default=0, help="bootstrap seed of the differences")
  parser.add_argument("--plot", default=None, metavar="OUT.png",
                      help="write per-metric bars with intervals across the rows")
  parser.add_argument("--rates-plot", default=None, metavar="OUT.png",
                      help="write each row's zero-shot positive rates against the prevalences")
  args = parser.parse_args(argv)
  try:
    specs = list(args.runs) + (rows_from_dir(args.runs_dir) if args.runs_dir else [])
    if not specs:
      raise UserError("give NAME=WORKDIR rows or --runs-dir DIR")
    rows = parse_rows(specs)
    if args.paper:
      single = [r for r in rows if len(r.workdirs) == 1]
      print(paper.markdown({r.name: r.results[0] for r in single}))
      return 0
    if args.all:
      keys = sorted(set().union(*(set(res) for r in rows for res in r.results)))
    else:
      keys = [k.format(d=args.dataset) for k in HEADLINE]
      keys = [k for k in keys if any(k in res for r in rows for res in r.results)]
    print("| metric | " + " | ".join(r.name for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
      print(f"| {key} | " + " | ".join(cell(r, key) for r in rows) + " |")
    if not args.no_paired and len(rows) > 1:
      names = [r.name for r in rows]
      base_name = args.baseline or names[0]
      if base_name not in names:
        raise UserError(f"--baseline {base_name!r} is not one of the rows {names}")
      base = rows[names.index(base_name)]
      others = [r for r in rows if r is not base]
      diffs = [paired_differences(base, r, seed=args.seed) for r in others]
      print(f"\nPaired differences, row - {base.name}, on the same test images "
            f"(95% bootstrap CI, {NUM_BOOTSTRAP} resamples shared by both rows):\n")
      print("| metric | " + " | ".join(f"{r.name} - {base.name}" for r in others) + " |")
      print("|---|" + "---|" * len(others))
      for key in keys:
        if any(key in d for d in diffs):
          print(f"| {key} | " + " | ".join(_diff_cell(d.get(key)) for d in diffs) + " |")
    if args.plot:
      plot(rows, keys, args.plot)
      print(f"\n(plot written to {args.plot})")
    if args.rates_plot:
      rates_plot(rows, args.dataset, args.rates_plot)
      print(f"\n(decision rates plot written to {args.rates_plot})")
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def _diff_cell(m: Metric | None) -> str:
  if m is None or math.isnan(m.value):
    return "n/a"
  if math.isnan(m.ci_low):
    return f"{m.value:+.3f}"
  return f"{m.value:+.3f} [{m.ci_low:+.3f}, {m.ci_high:+.3f}]"


if __name__ == "__main__":
  sys.exit(main())
