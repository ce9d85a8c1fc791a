"""Contrastive losses of docs/METHOD.md: InfoNCE, dynamic soft labels, KL and sigmoid losses.

    spec = LossSpec.from_config(config.loss, graph_enabled=config.model.graph.enabled)
    total, terms = clinic_loss(outputs, batch, spec)       # model outputs, the batch, the spec

Everything here is pure `jnp` and sharding-agnostic. The math lives in one function,
`_row_block_sums`, which computes the loss summed over a block of rows against all columns;
`clinic_loss` calls it with every row, and `sharded_clinic_loss` calls it inside `jax.shard_map`
with the device's own rows and all-gathered columns, then takes the global mean with `psum`. So
the unsharded path is the sharded path with one device.

Row layout of the 2B-row matrices: [originals 0..B-1 ; hard negatives B..2B-1], so the hard
negative of study i is row B + i. A device that owns originals [o, o + b) owns hard negatives
[B + o, B + o + b) as well; row indices below are always global.

Loss types (same targets Y_k, same pair table):
  softmax: mean over rows of KL(Yhat_row || softmax(logits_row)) (METHOD.md, Eq. 6-7, 10).
  sigmoid: beyond the paper, SigLIP-style. For each pair and stream the loss of a row is
    sum_j BCE(y_ij, sigmoid(z_ij)) = sum_j softplus(z_ij) - y_ij z_ij, with z = s * a b^T + bias
    and soft targets y = clip(Y_k, 0, 1) (the unnormalised weights, not Yhat); averaged over rows
    like the softmax loss. With 0/1 targets this is SigLIP's loss. `logit_bias` is optional
    (SigLIP learns it, initialised at -10 with s = 10); without it the bias is 0.

Soft labels (`soft_labels`):
  "dynamic": METHOD.md Eq. 4-5/9: Y[i,j] = (S[i,j] - tau) / (1 - tau) where S[i,j] > tau, else 0,
    capped at 1 (S can exceed 1 by rounding); tau >= 1 gives the identity, i.e. InfoNCE.
  "softclip": the SoftCLIP baseline (Gao et al. 2024), soft labels from the intra-modal
    self-similarity without thresholds: Y[i,j] = exp((S[i,j] - 1) / temperature), which after
    row normalisation is softmax(S[i,:] / temperature). The diagonal and own-negative rules below
    apply as in "dynamic". `softclip_temperature` is the same for every stream.
  In both modes Y[i,i] = 1, and Y[i,B+i] = Y[B+i,i] = 0 when `mask_own_negative`.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from clipmed import batch as batch_lib
from clipmed import errors
from clipmed.normalize import l2_normalize

STREAMS = ("text", "clinical", "graph")
LOSS_TYPES = ("softmax", "sigmoid")
SOFT_LABELS = ("dynamic", "softclip")

# Directed pairs of the METHOD.md table: name -> (row modality, column modality). "I" rows are
# originals only; "T" and "G" rows include the hard negatives when there are any, except when the
# columns are images (T->I, G->I), where only the original rows have a partner.
PAIRS = {
    "I->T": ("image", "text"),
    "T->I": ("text", "image"),
    "I->G": ("image", "graph"),
    "G->I": ("graph", "image"),
    "T->G": ("text", "graph"),
    "G->T": ("graph", "text"),
}


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """The training objective: which streams, thresholds, weights and loss form (config.loss).

  Built once by `from_config`, which checks every value, so a bad loss config stops before any
  data is prepared or any model compiled.

  Attributes:
    weights: stream -> w_k (Python floats, static); streams with weight 0 are left out.
    thresholds: stream -> tau_k for soft_labels="dynamic" (tau >= 1: identity targets).
    loss_type: "softmax" (KL, the paper) or "sigmoid" (pairwise BCE; module docstring).
    soft_labels: "dynamic" (Eq. 4) or "softclip" (module docstring).
    softclip_temperature: temperature of the "softclip" labels (None for "dynamic").
    mask_own_negative: zero Y[i, B+i] and Y[B+i, i].
    logit_bias: sigmoid loss only: a fixed scalar bias, or None.
  """
  weights: Mapping[str, float]
  thresholds: Mapping[str, float]
  loss_type: str = "softmax"
  soft_labels: str = "dynamic"
  softclip_temperature: float | None = None
  mask_own_negative: bool = True
  logit_bias: float | None = None

  def __post_init__(self):
    unknown = sorted(set(self.weights) - set(STREAMS))
    if unknown:
      raise errors.ConfigError(f"config.loss.weights has unknown streams {unknown}; use {STREAMS}")
    if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
      raise errors.ConfigError(f"config.loss.weights {dict(self.weights)} must be >= 0 with at "
                               "least one positive")
    if self.loss_type not in LOSS_TYPES:
      raise errors.ConfigError(f"config.loss.loss_type={self.loss_type!r}; choose one of "
                               f"{LOSS_TYPES}")
    if self.soft_labels not in SOFT_LABELS:
      raise errors.ConfigError(f"config.loss.soft_labels={self.soft_labels!r}; choose one of "
                               f"{SOFT_LABELS}")
    if self.soft_labels == "dynamic":
      missing = [k for k in self.streams if k not in self.thresholds]
      if missing:
        raise errors.ConfigError(f"streams {missing} have a positive weight but no threshold; "
                                 "add them to config.loss.thresholds")
    elif self.softclip_temperature is None or self.softclip_temperature <= 0:
      raise errors.ConfigError("config.loss.soft_labels='softclip' needs "
                               "config.loss.softclip_temperature > 0")
    if self.logit_bias is not None and self.loss_type != "sigmoid":
      raise errors.ConfigError("config.loss.logit_bias applies to loss_type='sigmoid' only; set "
                               "it to None")

  @classmethod
  def from_config(cls, loss_config: Any, *, graph_enabled: bool) -> "LossSpec":
    """From config.loss; `graph_enabled` (config.model.graph.enabled) gates the graph stream."""
    weights = {k: float(v) for k, v in loss_config.weights.items()}
    if weights.get("graph", 0.0) > 0 and not graph_enabled:
      raise errors.ConfigError("config.loss.weights.graph > 0 needs the report-graph encoder: "
                               "set config.model.graph.enabled=True or the weight to 0")
    softclip = loss_config.soft_labels == "softclip"
    return cls(
        weights=weights, thresholds={k: float(v) for k, v in loss_config.thresholds.items()},
        loss_type=str(loss_config.loss_type), soft_labels=str(loss_config.soft_labels),
        softclip_temperature=float(loss_config.softclip_temperature) if softclip else None,
        mask_own_negative=bool(loss_config.mask_own_negative),
        logit_bias=None if loss_config.logit_bias is None else float(loss_config.logit_bias))

  @property
  def streams(self) -> tuple[str, ...]:
    """The soft-label streams with a positive weight, in STREAMS order."""
    return tuple(k for k in STREAMS if self.weights.get(k, 0.0) > 0)



def infonce(image: jax.Array, text: jax.Array, logit_scale: jax.Array) -> jax.Array:
  """Symmetric CLIP loss: CE(image -> text) + CE(text -> image).

  This is the *sum* of the two directions (twice the CLIP paper's average), so that it equals
  `clinic_loss` with w_text = 1, tau_text = 1 and no other stream (METHOD.md's baseline CLIP).

  Args:
    image: [B, D] L2-normalised image embeddings.
    text: [B, D] L2-normalised text embeddings; row i is the positive of image i.
    logit_scale: scalar multiplier s.

  Returns:
    Scalar loss.
  """
  logits_bb = logit_scale * image @ text.T  # [B, B]
  i2t = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits_bb, axis=1)))
  t2i = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits_bb, axis=0)))
  return i2t + t2i


def _soft_label_rows(similarity: jax.Array, row_ids: jax.Array, *, threshold: float | None,
                     num_originals: int | None, mask_own_negative: bool,
                     softclip_temperature: float | None = None) -> jax.Array:
  """Unnormalised soft-label weights Y for a block of rows of a square similarity matrix.

  Args:
    similarity: [R, N] rows `row_ids` of the N x N self-similarity matrix S.
    row_ids: [R] int global row indices of the block.
    threshold: tau of Eq. 4 ("dynamic" labels); ignored when `softclip_temperature` is set.
    num_originals: B when N = 2B rows are [originals; hard negatives], else None.
    mask_own_negative: zero Y[i, B+i] and Y[B+i, i].
    softclip_temperature: if set, SoftCLIP labels exp((S - 1) / temperature) instead of Eq. 4.

  Returns:
    [R, N] weights Y with Y[i, i] = 1.
  """
  num_cols = similarity.shape[1]
  col_ids = jnp.arange(num_cols)
  if softclip_temperature is not None:
    y = jnp.exp((jnp.minimum(similarity, 1.0) - 1.0) / softclip_temperature)
  elif threshold >= 1.0:
    y = jnp.zeros_like(similarity)  # no S can pass tau >= 1 (and 1 - tau would divide by zero)
  else:
    y = jnp.where(similarity > threshold, (similarity - threshold) / (1.0 - threshold), 0.0)
    y = jnp.minimum(y, 1.0)
  y = jnp.where(row_ids[:, None] == col_ids[None, :], 1.0, y)
  if mask_own_negative and num_originals is not None:
    if num_cols == 2 * num_originals:
      partner = jnp.where(row_ids < num_originals, row_ids + num_originals,
                          row_ids - num_originals)
      y = jnp.where(partner[:, None] == col_ids[None, :], 0.0, y)
    elif num_cols != num_originals:
      raise ValueError(f"num_originals={num_originals} does not fit a similarity matrix with "
                       f"{num_cols} columns: expected {num_originals} or {2 * num_originals}.")
  return y


def soft_label_weights(similarity: jax.Array, threshold: float, *,
                       num_originals: int | None = None,
                       mask_own_negative: bool = True) -> jax.Array:
  """Dynamic soft-label weights Y of METHOD.md (Eq. 4/5/9), before row normalisation.

  Args:
    similarity: [N, N] self-similarity S = E E^T of L2-normalised features.
    threshold: tau (a Python float); tau >= 1 gives the identity.
    num_originals: B when N = 2B rows are [originals; hard negatives].
    mask_own_negative: zero Y[i, B+i] and Y[B+i, i] (needs `num_originals`).

  Returns:
    [N, N] weights Y with Y[i, i] = 1.
  """
  row_ids = jnp.arange(similarity.shape[0])
  return _soft_label_rows(similarity, row_ids, threshold=threshold, num_originals=num_originals,
                          mask_own_negative=mask_own_negative)


def _normalize_rows(targets: jax.Array) -> jax.Array:
  """Divides each row by its sum; an all-zero row stays zero."""
  total = jnp.sum(targets, axis=-1, keepdims=True)
  return targets / jnp.where(total > 0, total, 1.0)


def _kl_rows(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """[R] KL(normalised target row || softmax(logits row)), 0 log 0 = 0."""
  p = _normalize_rows(targets)
  positive = p > 0
  p_log_p = jnp.where(positive, p * jnp.log(jnp.where(positive, p, 1.0)), 0.0)
  return jnp.sum(p_log_p, axis=-1) - jnp.sum(p * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def _sigmoid_rows(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """[R] sum over columns of BCE(clip(targets, 0, 1), sigmoid(logits))."""
  y = jnp.clip(targets, 0.0, 1.0)
  return jnp.sum(jax.nn.softplus(logits) - y * logits, axis=-1)


def kl_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean over rows of KL(targets_row / sum(targets_row) || softmax(logits_row)).

  Args:
    logits: [R, N].
    targets: [R, N] non-negative weights (rows are normalised here; 0 log 0 = 0; an all-zero
      row contributes 0).

  Returns:
    Scalar.
  """
  return jnp.mean(_kl_rows(logits, targets))


def _flat_inputs(outputs: Mapping[str, Any], batch: batch_lib.Batch,
                 spec: LossSpec) -> dict[str, jax.Array]:
  """The arrays the loss reads, flat: image, text and, when present, graph, labels, neg_text,
  neg_graph, neg_labels.

  Labels are only read when the clinical stream is on, and never carry a gradient.
  """
  flat = {"image": outputs["image"], "text": outputs["text"]}
  if "graph" in outputs:
    flat["graph"] = outputs["graph"]
  negative = outputs.get("negative")
  if negative is not None:
    flat["neg_text"] = negative["text"]
    if "graph" in outputs:
      flat["neg_graph"] = negative["graph"]
  if "clinical" in spec.streams:
    flat["labels"] = lax.stop_gradient(batch[batch_lib.LABELS])
    if negative is not None:
      flat["neg_labels"] = lax.stop_gradient(batch[batch_lib.NEGATIVE][batch_lib.LABELS])
  return flat


def _assemble(flat: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Stacks [originals; hard negatives] per modality; normalises the clinical vectors."""
  def stack(name):
    neg = flat.get("neg_" + name)
    return flat[name] if neg is None else jnp.concatenate([flat[name], neg], axis=0)
  feats = {"image": flat["image"], "text": stack("text")}
  if "labels" in flat:
    feats["clinical"] = lax.stop_gradient(l2_normalize(stack("labels")))
  if "graph" in flat:
    feats["graph"] = stack("graph")
  return feats


def _row_block_sums(rows: Mapping[str, jax.Array], cols: Mapping[str, jax.Array], row_offset,
                    logit_scale: jax.Array, logit_bias: jax.Array | None, spec: LossSpec
                    ) -> tuple[dict[str, jax.Array], dict[str, int]]:
  """The loss of METHOD.md for a block of rows against all columns: the single code path.

  Args:
    rows: modality -> this block's rows: "image" [b, D] (originals o..o+b-1), "text"/"graph"
      [R, D] and "clinical" [R, 14] with R = b, or R = 2b ordered [originals; their negatives].
    cols: modality -> all rows: "image" [B, D], "text"/"graph" [N, D], "clinical" [N, 14];
      N = B or 2B ([originals; negatives]).
    row_offset: global index o of the block's first original (int or traced scalar).
    logit_scale: the scalar multiplier s.
    logit_bias: scalar bias of the sigmoid loss, or None.
    spec: the loss spec.

  Returns:
    (sums, counts): per term name, the weighted loss summed over this block's rows, and the
    global number of rows that term is averaged over.
  """
  num_orig = cols["image"].shape[0]          # B
  num_all = cols["text"].shape[0]            # N
  block = rows["image"].shape[0]             # b
  has_neg = num_all == 2 * num_orig
  orig_ids = row_offset + jnp.arange(block)
  row_ids = jnp.concatenate([orig_ids, orig_ids + num_orig]) if has_neg else orig_ids

  # Stream k's self-similarity uses the features of the same name (text T, clinical C, graph G).
  streams = [k for k in spec.streams if k in cols]
  targets = {}  # stream -> [R, N] unnormalised Y rows, no gradient
  for k in streams:
    sim_rn = lax.stop_gradient(rows[k]) @ lax.stop_gradient(cols[k]).T  # [R, N]
    targets[k] = lax.stop_gradient(_soft_label_rows(
        sim_rn, row_ids, threshold=spec.thresholds.get(k),
        num_originals=num_orig if has_neg else None, mask_own_negative=spec.mask_own_negative,
        softclip_temperature=spec.softclip_temperature))

  row_loss = _kl_rows if spec.loss_type == "softmax" else _sigmoid_rows
  sums, counts = {}, {}
  for pair, (row_mod, col_mod) in PAIRS.items():
    if row_mod not in cols or col_mod not in cols:
      continue
    a = rows[row_mod]
    if col_mod == "image":
      a = a[:block]  # rows without an image partner (hard negatives) only exist vs. T and G
    logits = logit_scale * (a @ cols[col_mod].T)  # [b or R, B or N]
    if spec.loss_type == "sigmoid" and logit_bias is not None:
      logits = logits + logit_bias
    for k in streams:
      y = targets[k][:a.shape[0], :cols[col_mod].shape[0]]
      sums[f"{pair}/{k}"] = spec.weights[k] * jnp.sum(row_loss(logits, y))
      counts[f"{pair}/{k}"] = num_orig if row_mod == "image" or col_mod == "image" else num_all
  return sums, counts


def _finalize(sums: Mapping[str, jax.Array], counts: Mapping[str, int]
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
  terms = {name: sums[name] / counts[name] for name in sums}
  total = functools.reduce(jnp.add, terms.values(), jnp.zeros((), jnp.float32))
  return total, terms


def _logit_bias(outputs: Mapping[str, Any], spec: LossSpec) -> jax.Array | None:
  """A learned bias from the model outputs, else the spec's fixed one (sigmoid loss only)."""
  if spec.loss_type != "sigmoid":
    return None
  bias = outputs.get("logit_bias", spec.logit_bias)
  return None if bias is None else jnp.asarray(bias, jnp.float32)


def clinic_loss(outputs: Mapping[str, Any], batch: batch_lib.Batch, spec: LossSpec
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_total of METHOD.md: weighted soft-label losses over the directed pairs and streams.

  Args:
    outputs: the model's outputs (clipmed/models/clip.py): "image", "text" [B, D] L2-normalised,
      "logit_scale" (scalar s), optionally "graph" [B, D], "negative": {"text", "graph"} [B, D]
      (the hard negatives; with them every report-side matrix has 2B rows) and "logit_bias".
    batch: the batch (clipmed/batch.py); `labels` [B, K] (and negative.labels) are read for the
      clinical stream, L2-normalised here (zero stays zero).
    spec: the loss spec.

  Returns:
    (total, terms): the scalar total and a dict "PAIR/stream" (e.g. "I->T/text") -> the weighted
    term w_k * mean_rows loss. Targets carry no gradient.
  """
  feats = _assemble(_flat_inputs(outputs, batch, spec))
  sums, counts = _row_block_sums(feats, feats, 0, outputs["logit_scale"],
                                 _logit_bias(outputs, spec), spec)
  return _finalize(sums, counts)


def sharded_clinic_loss(outputs: Mapping[str, Any], batch: batch_lib.Batch, spec: LossSpec, *,
                        mesh: Mesh, data_axes: str | Sequence[str] = ("data",)
                        ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`clinic_loss` with the rows split over the mesh's data axes (METHOD.md, "Sharding").

  Call it inside the jitted train step with batch-sharded inputs. Each device all-gathers the
  column features (v, T, G, C: [B or 2B, D], cheap), computes the similarities, targets and
  losses of its own rows only (its b = B/n originals and their b hard negatives), and the global
  mean comes from a psum of the row sums. No device holds an N x N matrix when n > 1. Works for
  meshes with Auto or Explicit axes; the mesh axes other than `data_axes` see the batch
  replicated. Same arguments and result as `clinic_loss`, plus:

  Args:
    mesh: the train step's mesh.
    data_axes: the mesh axis name(s) the batch axis is sharded over.
  """
  axes = (data_axes,) if isinstance(data_axes, str) else tuple(data_axes)
  num_shards = 1
  for name in axes:
    num_shards *= mesh.shape[name]
  flat = _flat_inputs(outputs, batch, spec)
  if flat["image"].shape[0] % num_shards:
    raise ValueError(f"Batch size {flat['image'].shape[0]} is not divisible by the {num_shards} "
                     f"devices of mesh axes {axes}; choose a global batch size that is a multiple.")
  scalars = {"logit_scale": jnp.asarray(outputs["logit_scale"], jnp.float32)}
  bias = _logit_bias(outputs, spec)
  if bias is not None:
    scalars["logit_bias"] = bias

  def local(flat_local, scalars):
    block = flat_local["image"].shape[0]
    row_offset = lax.axis_index(axes) * block
    gathered = {k: lax.all_gather(v, axes, axis=0, tiled=True) for k, v in flat_local.items()}
    sums, counts = _row_block_sums(_assemble(flat_local), _assemble(gathered), row_offset,
                                   scalars["logit_scale"], scalars.get("logit_bias"), spec)
    return _finalize(lax.psum(sums, axes), counts)

  axis_types = dict(zip(mesh.axis_names, mesh.axis_types))
  if all(axis_types[name] == AxisType.Explicit for name in axes):
    # With Explicit axes shard_map needs inputs that already carry the in_specs sharding: a no-op
    # for the train step's batch-sharded embeddings, a reshard otherwise. (Auto axes reshard
    # implicitly.)
    flat = jax.reshard(flat, NamedSharding(mesh, P(axes)))
    scalars = jax.reshard(scalars, NamedSharding(mesh, P()))
  return jax.shard_map(local, mesh=mesh, in_specs=(P(axes), P()), out_specs=P())(flat, scalars)
