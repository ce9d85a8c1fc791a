"""Linear probe: a multi-label logistic regression on frozen image embeddings.

Config fields (config.evals.<name>):
  task="linear_probe", split="test", every_steps=0, num_bootstrap=1000,
  train_split="train"            the split the head is trained on
  classes=[...]                  CheXpert category names (one sigmoid output each)
  fractions=(0.01, 0.1, 1.0)     fractions of the training split (seeded subsets)
  weight_decay=1e-3              L2 penalty 0.5 * wd * ||W||^2 (the bias is not penalised)
  max_iterations=200             L-BFGS iterations (it stops earlier at a gradient norm of 1e-5)

Training targets: labeler value 1 -> 1; 0 and not mentioned -> 0; uncertain (-1) studies do not
enter that class's loss (the zero-shot ground truth of clipmed.evaluators.zero_shot). Features are
standardised with the subset's mean and deviation. The loss is the sum over classes of the mean
binary cross-entropy; it is convex, so full-batch L-BFGS (optax) reaches the optimum quickly and
deterministically. Subsets are stratified by each study's rarest positive class (studies without
positives form one stratum), allocated by largest remainder (ties to the smaller stratum), so
rare classes keep their share.
Metrics, with the zero-shot definitions on `split`: "<p>pct/auroc/<class slug>" and
"<p>pct/mean_auroc" for each fraction, e.g. "1pct/mean_auroc"; all fractions share one set of
bootstrap resamples. Per-example arrays recorded: scores_<p>pct [N, K] test logits per fraction,
fractions, positive, counted, labels, classes.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from clipmed import errors
from clipmed.evaluators import metrics
from clipmed.evaluators import zero_shot
from clipmed.evaluators.base import EvalContext, Evaluator, Metric

_GRAD_TOL = 1e-5


def fraction_name(fraction: float) -> str:
  """0.01 -> "1pct", 1.0 -> "100pct", 0.005 -> "0.5pct"."""
  return f"{fraction * 100:g}pct"


def stratified_subset(positive: np.ndarray, fraction: float,
                      rng: np.random.Generator) -> np.ndarray:
  """Seeded subset of the N studies, stratified by each study's rarest positive class.

  Args:
    positive: [N, K] bool.
    fraction: in (0, 1]; 1 returns every study.
    rng: randomness.

  Returns:
    Sorted [M] int indices, M = max(1, round(fraction * N)).
  """
  n = positive.shape[0]
  if not 0 < fraction <= 1:
    raise ValueError(f"linear_probe fractions must be in (0, 1], got {fraction}")
  m = max(1, int(round(fraction * n)))
  if m >= n:
    return np.arange(n)
  prevalence = positive.sum(axis=0)                                    # [K]
  rarity = np.where(positive, prevalence[None, :], np.inf)             # [N, K]
  stratum = np.where(positive.any(axis=1), np.argmin(rarity, axis=1), -1)
  keys, counts = np.unique(stratum, return_counts=True)
  quota = m * counts / n
  take = np.floor(quota).astype(int)
  # Largest remainder first; among equal remainders the smaller stratum (the rarer class) first.
  remainder_order = np.lexsort((counts, -(quota - take)))
  take[remainder_order[:m - take.sum()]] += 1
  chosen = [rng.choice(np.flatnonzero(stratum == key), size=t, replace=False)
            for key, t in zip(keys, take) if t > 0]
  return np.sort(np.concatenate(chosen))


@jax.jit
def _fit(x, y, weights, weight_decay, max_iterations):
  """Full-batch L-BFGS for a multi-label logistic regression.

  Args:
    x: [N, D] standardised features.
    y: [N, K] 0/1 targets.
    weights: [N, K] 1 where a study enters a class's loss, else 0.
    weight_decay: scalar L2 penalty on the weights.
    max_iterations: scalar iteration cap.

  Returns:
    {"w": [D, K], "b": [K]}.
  """
  per_class = jnp.maximum(weights.sum(axis=0), 1.0)                   # [K]

  def loss_fn(params):
    logits = x @ params["w"] + params["b"]                             # [N, K]
    bce = optax.sigmoid_binary_cross_entropy(logits, y) * weights
    return jnp.sum(bce.sum(axis=0) / per_class) + 0.5 * weight_decay * jnp.sum(params["w"] ** 2)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss_fn)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss_fn)
    return optax.apply_updates(params, updates), state

  def keep_going(carry):
    _, state = carry
    count = optax.tree.get(state, "count")
    grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
    return (count == 0) | ((count < max_iterations) & (grad_norm >= _GRAD_TOL))

  params = {"w": jnp.zeros((x.shape[1], y.shape[1]), x.dtype), "b": jnp.zeros(y.shape[1], x.dtype)}
  params, _ = jax.lax.while_loop(keep_going, step, (params, opt.init(params)))
  return params


def fit_linear_head(features: np.ndarray, positive: np.ndarray, counted: np.ndarray,
                    subset: np.ndarray, *, weight_decay: float, max_iterations: int):
  """Fits the head on `subset` rows; returns a function [M, D] features -> [M, K] logits.

  All training rows stay in the arrays (subset membership is a weight), so every fraction reuses
  one compiled solver.
  """
  member = np.zeros(features.shape[0], np.float32)
  member[subset] = 1.0
  mean = features[subset].mean(axis=0)
  std = features[subset].std(axis=0) + 1e-6
  x = ((features - mean) / std).astype(np.float32)
  weights = (counted * member[:, None]).astype(np.float32)
  params = _fit(jnp.asarray(x), jnp.asarray(positive, jnp.float32), jnp.asarray(weights),
                jnp.float32(weight_decay), jnp.int32(max_iterations))
  w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
  return lambda f: ((np.asarray(f, np.float64) - mean) / std) @ w + b


class LinearProbe(Evaluator):
  """AUROC of linear heads trained on 1%, 10% and 100% of the training split."""
  task = "linear_probe"
  required_fields = ("train_split", "classes", "fractions", "weight_decay", "max_iterations")

  def __init__(self, config, name=None):
    super().__init__(config, name)
    self.classes = list(config.classes)
    for fraction in config.fractions:
      if not 0 < fraction <= 1:
        raise errors.ConfigError(f"config.evals.{self.name}.fractions: {fraction} is not in (0, 1]")

  @staticmethod
  def statistics(examples):
    classes = [str(c) for c in examples["classes"]]
    per_fraction = {str(p): zero_shot.auroc_statistics(examples["positive"], examples["counted"],
                                                        examples[f"scores_{p}"], classes)
                    for p in examples["fractions"]}
    return lambda w: {f"{p}/{k}": v for p, stat_fn in per_fraction.items()
                      for k, v in stat_fn(w).items()}

  def evaluate(self, ctx: EvalContext) -> dict[str, Metric]:
    train = ctx.split(self.config.train_split)
    test = ctx.split(self.config.split)
    columns = ctx.columns(self.classes, f"config.evals.{self.name}.classes")
    train_pos, train_counted = zero_shot.binary_targets(train.labels[:, columns])
    test_pos, test_counted = zero_shot.binary_targets(test.labels[:, columns])
    rng = np.random.default_rng(ctx.seed)
    examples = dict(positive=test_pos, counted=test_counted, labels=test.labels[:, columns],
                    classes=np.asarray(self.classes),
                    fractions=np.asarray([fraction_name(float(f)) for f in self.config.fractions]))
    for fraction in self.config.fractions:
      start = time.perf_counter()
      subset = stratified_subset(train_pos, float(fraction), rng)
      head = fit_linear_head(train.image, train_pos, train_counted, subset,
                             weight_decay=float(self.config.weight_decay),
                             max_iterations=int(self.config.max_iterations))
      examples[f"scores_{fraction_name(float(fraction))}"] = head(test.image)
      logging.info("linear_probe %s: %d training studies, %.2f s", fraction_name(float(fraction)),
                   len(subset), time.perf_counter() - start)
    ctx.record(self, test, examples)
    zero_shot.warn_undefined(test_pos, test_counted, self.classes)
    return metrics.bootstrap(self.statistics(examples), test.num_studies,
                             num_resamples=self.config.num_bootstrap, seed=ctx.seed)
