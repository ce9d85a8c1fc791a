"""Image-to-report retrieval over one split.

Config fields (config.evals.<name>):
  task="retrieval", split="test", every_steps=0, num_bootstrap=1000,
  ks=(1, 5, 10)           cut-offs for Recall@k

Each test image ranks all N reports of the split by cosine similarity.
- "recall@k": the ground truth is the study's own report. Reports with exactly the same text as the
  own report (synthetic and templated datasets repeat normal reports) count as the ground truth
  too; a different report with a similarity equal to the ground truth's ranks ahead of it.
- "chance@k": the expected Recall@k of a model that ranks the distinct report texts at random
  (k / N when all reports are distinct; estimated over seeded random orders when texts repeat),
  a constant shown next to the recall for reference.
- "precision@5": fraction of the top-5 reports whose clinical label vector equals the query's
  (binary vector: positive or uncertain -> 1, with the No Finding rule; clipmed.report.chexpert).
- "label_precision", "label_recall", "label_f1": the labels of the top-1 report against the query's
  ground-truth labels over the 14 categories, same binary vectors, micro-averaged over queries and
  categories (as the clinical-efficacy metrics of report generation).
Under U-Ignore (config.data.uncertain_as="ignore") an uncertain label of the query or of the
retrieved report leaves that category out of both comparisons.
Per-example arrays recorded: ranks (0-based rank of the own report), ks, precision_at_k, tp,
n_pred, n_true (top-1 label counts), labels.
"""

import numpy as np

from clipmed.evaluators import metrics
from clipmed.evaluators.base import EvalContext, Evaluator, Metric
from clipmed.report import chexpert

PRECISION_K = 5  # "Top-5 precision" of the method definition (docs/METHOD.md)


def binary_label_vectors(labels: np.ndarray,
                         class_names=chexpert.CATEGORIES) -> np.ndarray:
  """[N, K] labeler values -> [N, K] bool: positive or uncertain, with the No Finding rule."""
  return chexpert.clinical_vector(labels, class_names=class_names, uncertain_as=1.0,
                                  normalize=False) > 0


def text_groups(texts: list[str]) -> np.ndarray:
  """[N] texts -> [N] int id shared by exactly equal texts."""
  ids: dict[str, int] = {}
  return np.array([ids.setdefault(t, len(ids)) for t in texts], dtype=np.int64)


def ground_truth_ranks(sims: np.ndarray, groups: np.ndarray) -> np.ndarray:
  """0-based rank of each query's own report among the candidates. sims: [N, N] -> [N] int.

  Reports in the query's own text group are the ground truth; every other report with a
  similarity >= the ground truth's ranks ahead of it.
  """
  own = np.diagonal(sims)[:, None]                                      # [N, 1]
  other = groups[None, :] != groups[:, None]                            # [N, N]
  return np.sum((sims >= own) & other, axis=1)


def chance_recall(groups: np.ndarray, ks: list[int], rng: np.random.Generator,
                  num_orders: int = 1000) -> dict[int, float]:
  """Expected Recall@k of a model that orders the distinct report texts at random.

  Equal texts have equal embeddings, so they always sit together in a ranking: a random model
  shuffles the groups of equal reports, and a query hits at k when fewer than k reports precede
  its own group. With all reports distinct this is exactly k / N; with repeated texts it is
  estimated over `num_orders` seeded random orders of the groups.

  Args:
    groups: [N] text-group id per report (text_groups).
    ks: cut-offs.
    rng: randomness for the orders.
    num_orders: random orders to average over.

  Returns:
    {k: chance rate}.
  """
  sizes = np.bincount(groups).astype(np.float64)                         # [U]
  n = sizes.sum()
  if np.all(sizes == 1):
    return {k: min(k, n) / n for k in ks}
  order = np.argsort(rng.random((num_orders, sizes.size)), axis=1)      # [R, U]
  sizes_r = sizes[order]                                                 # [R, U]
  start = np.cumsum(sizes_r, axis=1) - sizes_r                           # reports before a group
  # Each group's queries (its size) hit when its first report is within the top k.
  return {k: float(np.mean(np.sum(sizes_r * (start < k), axis=1) / n)) for k in ks}


class Retrieval(Evaluator):
  """Image-to-report retrieval: Recall@k, Top-5 precision and labeler-based P/R/F1."""
  task = "retrieval"
  needs_reports = True
  required_fields = ("ks",)

  @staticmethod
  def statistics(examples):
    ranks, tp = examples["ranks"], examples["tp"]
    n_pred, n_true = examples["n_pred"], examples["n_true"]

    def stat_fn(w):
      out = {f"recall@{k}": metrics.weighted_mean(ranks < k, w) for k in examples["ks"]}
      out[f"precision@{PRECISION_K}"] = metrics.weighted_mean(examples["precision_at_k"], w)
      out["label_precision"] = metrics.weighted_ratio(tp, n_pred, w)
      out["label_recall"] = metrics.weighted_ratio(tp, n_true, w)
      out["label_f1"] = metrics.weighted_ratio(2 * tp, n_pred + n_true, w)
      return out
    return stat_fn

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    data = ctx.split(self.config.split)
    n = data.num_studies
    sims = data.image @ data.report.T                                   # [N, N]
    groups = text_groups(data.reports)
    ranks = ground_truth_ranks(sims, groups)                            # [N]
    ks = [int(k) for k in self.config.ks]

    vec = binary_label_vectors(data.labels, data.class_names)          # [N, K] bool
    # An uncertain label still here is U-Ignore's (config.data.uncertain_as="ignore"; the other
    # policies resolved it before evaluation): that cell is compared with nothing.
    known = np.asarray(data.labels) != chexpert.UNCERTAIN               # [N, K]
    kp = min(PRECISION_K, n)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :kp]              # [N, kp]
    agree = (vec[top] == vec[:, None, :]) | ~known[top] | ~known[:, None, :]
    precision_k = np.all(agree, axis=-1).mean(axis=1)                   # [N]
    pred = vec[top[:, 0]]                                               # [N, K] top-1 labels
    scored = known & known[top[:, 0]]                                   # [N, K]
    tp = np.sum(pred & vec & scored, axis=1).astype(np.float64)         # [N]
    n_pred = np.sum(pred & scored, axis=1).astype(np.float64)
    n_true = np.sum(vec & scored, axis=1).astype(np.float64)
    examples = dict(ranks=ranks, ks=np.asarray(ks), precision_at_k=precision_k, tp=tp,
                    n_pred=n_pred, n_true=n_true, labels=data.labels)
    ctx.record(self, data, examples)
    results = metrics.bootstrap(self.statistics(examples), n,
                                num_resamples=self.config.num_bootstrap, seed=ctx.seed)
    chance = chance_recall(groups, ks, np.random.default_rng(ctx.seed))
    for k in ks:
      results[f"chance@{k}"] = metrics.constant(chance[k])
    return results
