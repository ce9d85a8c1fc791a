"""Tests for clipmed/losses.py against an independent float64 numpy reference of METHOD.md."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipmed import errors
from clipmed import losses
from configs import common

STREAMS = ("text", "clinical", "graph")


def _unit(rng, shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _inputs(seed=0, batch=6, dim=8, negatives=True, graph=True):
  rng = np.random.default_rng(seed)
  out = dict(image=_unit(rng, (batch, dim)), text=_unit(rng, (batch, dim)),
             labels=(rng.random((batch, 14)) > 0.6).astype(np.float32))
  if graph:
    out["graph"] = _unit(rng, (batch, dim))
  if negatives:
    out["neg_text"] = _unit(rng, (batch, dim))
    out["neg_labels"] = (rng.random((batch, 14)) > 0.6).astype(np.float32)
    if graph:
      out["neg_graph"] = _unit(rng, (batch, dim))
  return out


def _np_log_softmax(z):
  z = z - z.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _np_normalize(x):
  n = np.linalg.norm(x, axis=-1, keepdims=True)
  return np.where(n > 0, x / np.where(n > 0, n, 1), 0)


def _np_weights(feats, tau, num_orig, mask=True, temperature=None):
  """METHOD.md Eq. 4/5/9 written out directly (float64)."""
  sim = feats @ feats.T
  n = len(sim)
  if temperature is not None:
    y = np.exp((np.minimum(sim, 1) - 1) / temperature)
  elif tau >= 1:
    y = np.zeros_like(sim)
  else:
    y = np.minimum(np.where(sim > tau, (sim - tau) / (1 - tau), 0.0), 1.0)
  np.fill_diagonal(y, 1.0)
  if mask and n == 2 * num_orig:
    for i in range(num_orig):
      y[i, num_orig + i] = y[num_orig + i, i] = 0.0
  return y


def _np_row_losses(logits, y, loss_type):
  if loss_type == "softmax":
    p = y / y.sum(axis=1, keepdims=True)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)
    return (plogp - p * _np_log_softmax(logits)).sum(axis=1)
  y = np.clip(y, 0, 1)
  return (np.logaddexp(0, logits) - y * logits).sum(axis=1)


def _np_clinic_loss(x, scale, thresholds, weights, loss_type="softmax", bias=0.0, mask=True,
                    temperature=None):
  """The METHOD.md table with full matrices; returns {name: weighted term}."""
  x = {k: np.asarray(val, np.float64) for k, val in x.items()}
  v = x["image"]
  num_orig = len(v)
  neg = "neg_text" in x
  cat = (lambda a, b: np.concatenate([x[a], x[b]])) if neg else (lambda a, b: x[a])
  feats = {"text": cat("text", "neg_text"),
           "clinical": _np_normalize(cat("labels", "neg_labels"))}
  if "graph" in x:
    feats["graph"] = cat("graph", "neg_graph")
  n = len(feats["text"])
  assert n == (2 * num_orig if neg else num_orig)
  big_t, big_g = feats["text"], feats.get("graph")
  pairs = {"I->T": (v @ big_t.T, (num_orig, n), (slice(0, num_orig), slice(None))),
           "T->I": (big_t[:num_orig] @ v.T, (num_orig, num_orig),
                    (slice(0, num_orig), slice(0, num_orig)))}
  if big_g is not None:
    pairs.update({
        "I->G": (v @ big_g.T, (num_orig, n), (slice(0, num_orig), slice(None))),
        "G->I": (big_g[:num_orig] @ v.T, (num_orig, num_orig),
                 (slice(0, num_orig), slice(0, num_orig))),
        "T->G": (big_t @ big_g.T, (n, n), (slice(None), slice(None))),
        "G->T": (big_g @ big_t.T, (n, n), (slice(None), slice(None)))})
  terms = {}
  for k in STREAMS:
    if weights.get(k, 0) <= 0 or k not in feats:
      continue
    y = _np_weights(feats[k], thresholds.get(k, 0.0), num_orig, mask, temperature)
    for name, (sim, shape, sel) in pairs.items():
      assert sim.shape == shape  # I->T B x 2B, T->I B x B, T->G 2B x 2B
      logits = scale * sim + (bias if loss_type == "sigmoid" else 0.0)
      terms[f"{name}/{k}"] = weights[k] * _np_row_losses(logits, y[sel], loss_type).mean()
  return terms


def _model_outputs_and_batch(x, scale, logit_bias=None):
  """The model outputs and the batch fields the loss reads, from flat test arrays."""
  x = {k: jnp.asarray(v) for k, v in x.items()}
  outputs = {"image": x["image"], "text": x["text"], "logit_scale": scale}
  if "graph" in x:
    outputs["graph"] = x["graph"]
  if "neg_text" in x:
    outputs["negative"] = {"text": x["neg_text"]}
    if "neg_graph" in x:
      outputs["negative"]["graph"] = x["neg_graph"]
  if logit_bias is not None:
    outputs["logit_bias"] = logit_bias
  batch = {"labels": x["labels"]}
  if "neg_labels" in x:
    batch["negative"] = {"labels": x["neg_labels"]}
  return outputs, batch


def _spec(*, weights, thresholds=None, **kw):
  return losses.LossSpec(weights=weights, thresholds=thresholds or {}, **kw)


def _call(x, scale, *, logit_bias=None, **kw):
  outputs, batch = _model_outputs_and_batch(x, scale, logit_bias)
  return losses.clinic_loss(outputs, batch, _spec(**kw))


def _np_infonce(v, t, scale):
  logits = scale * np.asarray(v, np.float64) @ np.asarray(t, np.float64).T
  idx = np.arange(len(v))
  return -_np_log_softmax(logits)[idx, idx].mean() - _np_log_softmax(logits.T)[idx, idx].mean()


def test_infonce_matches_numpy():
  x = _inputs(negatives=False, graph=False)
  got = losses.infonce(jnp.asarray(x["image"]), jnp.asarray(x["text"]), 7.0)
  np.testing.assert_allclose(got, _np_infonce(x["image"], x["text"], 7.0), rtol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 1.5])
def test_threshold_at_least_one_is_infonce(tau):
  x = _inputs(negatives=False, graph=False)
  total, terms = _call(x, 7.0, thresholds=dict(text=tau), weights=dict(text=1.0))
  expected = _np_infonce(x["image"], x["text"], 7.0)
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  np.testing.assert_allclose(total, losses.infonce(x["image"], x["text"], 7.0), rtol=1e-6)
  assert sorted(terms) == ["I->T/text", "T->I/text"]


def test_threshold_one_all_streams_is_cross_entropy_with_hard_negatives():
  x = _inputs()
  weights = dict(text=1.0, clinical=0.5, graph=0.25)
  _, terms = _call(x, 5.0, thresholds=dict(text=1.0, clinical=2.0, graph=1.0), weights=weights)
  b = len(x["image"])
  big_t = np.concatenate([x["text"], x["neg_text"]]).astype(np.float64)
  big_g = np.concatenate([x["graph"], x["neg_graph"]]).astype(np.float64)
  v = x["image"].astype(np.float64)
  def ce(logits):
    return -_np_log_softmax(logits)[np.arange(len(logits)), np.arange(len(logits))].mean()
  plain = {"I->T": ce(5 * v @ big_t.T), "T->I": ce(5 * big_t[:b] @ v.T),
           "I->G": ce(5 * v @ big_g.T), "G->I": ce(5 * big_g[:b] @ v.T),
           "T->G": ce(5 * big_t @ big_g.T), "G->T": ce(5 * big_g @ big_t.T)}
  assert len(terms) == 18
  for name, value in terms.items():
    pair, k = name.split("/")
    np.testing.assert_allclose(value, weights[k] * plain[pair], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("loss_type", ["softmax", "sigmoid"])
@pytest.mark.parametrize("negatives,graph", [(True, True), (False, True), (True, False)])
def test_matches_numpy_reference(loss_type, negatives, graph):
  x = _inputs(seed=1, negatives=negatives, graph=graph)
  # Correlated texts so that some similarities pass the thresholds.
  x["text"] = np.asarray(_np_normalize(x["text"] + 0.8 * x["image"]), np.float32)
  thresholds = dict(text=0.1, clinical=0.3, graph=-0.2)
  weights = dict(text=1.0, clinical=0.7, graph=0.4)
  bias = -2.0 if loss_type == "sigmoid" else None
  total, terms = _call(x, 6.0, thresholds=thresholds, weights=weights, loss_type=loss_type,
                       logit_bias=bias)
  expected = _np_clinic_loss(x, 6.0, thresholds, weights, loss_type, bias or 0.0)
  assert sorted(terms) == sorted(expected)
  for name in expected:
    np.testing.assert_allclose(terms[name], expected[name], rtol=2e-5, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(total, sum(expected.values()), rtol=2e-5)


def test_softclip_matches_numpy_reference():
  x = _inputs(seed=2)
  weights = dict(text=1.0, clinical=0.5)
  total, terms = _call(x, 6.0, weights=weights, soft_labels="softclip", softclip_temperature=0.2)
  expected = _np_clinic_loss(x, 6.0, {}, weights, temperature=0.2)
  for name in expected:
    np.testing.assert_allclose(terms[name], expected[name], rtol=2e-5, err_msg=name)
  assert sorted(terms) == sorted(expected)


def test_soft_label_weights_formula_and_mask():
  sim = jnp.array([[1.0, 0.6, 0.9, 0.7],
                   [0.6, 1.0, 0.2, 0.95],
                   [0.9, 0.2, 1.0, 0.1],
                   [0.7, 0.95, 0.1, 1.0]])
  unmasked = np.array([[1.0, 0.2, 0.8, 0.4],   # (s - 0.5) / 0.5 above tau = 0.5, else 0
                       [0.2, 1.0, 0.0, 0.9],
                       [0.8, 0.0, 1.0, 0.0],
                       [0.4, 0.9, 0.0, 1.0]])
  masked = unmasked.copy()
  masked[0, 2] = masked[2, 0] = masked[1, 3] = masked[3, 1] = 0.0   # B = 2: (i, B+i), (B+i, i)
  np.testing.assert_allclose(losses.soft_label_weights(sim, 0.5, num_originals=2), masked,
                             atol=1e-6)
  np.testing.assert_allclose(
      losses.soft_label_weights(sim, 0.5, num_originals=2, mask_own_negative=False), unmasked,
      atol=1e-6)
  np.testing.assert_allclose(losses.soft_label_weights(sim, 0.5), unmasked, atol=1e-6)
  masked_ones = losses.soft_label_weights(jnp.ones((6, 6)), 0.5, num_originals=3)
  mask = np.ones((6, 6))
  for i in range(3):
    mask[i, 3 + i] = mask[3 + i, i] = 0
  np.testing.assert_array_equal(masked_ones, mask)
  np.testing.assert_array_equal(losses.soft_label_weights(sim, 1.0), np.eye(4))


def test_duplicated_reports_share_target_mass():
  rng = np.random.default_rng(3)
  text = _unit(rng, (5, 8))
  text[3] = text[1]
  y = losses.soft_label_weights(jnp.asarray(text @ text.T), 0.99)
  yhat = np.asarray(y) / np.asarray(y).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(yhat[1, [1, 3]], [0.5, 0.5], atol=1e-5)
  np.testing.assert_allclose(yhat[3, [1, 3]], [0.5, 0.5], atol=1e-5)
  np.testing.assert_allclose(yhat[0], np.eye(5)[0])
  # In the loss: a duplicated report gives the two images the same I->T target.
  x = dict(image=_unit(rng, (5, 8)), text=text, labels=np.zeros((5, 14), np.float32))
  _, terms = _call(x, 4.0, thresholds=dict(text=0.99), weights=dict(text=1.0))
  expected = _np_clinic_loss(x, 4.0, dict(text=0.99), dict(text=1.0))
  np.testing.assert_allclose(terms["I->T/text"], expected["I->T/text"], rtol=1e-5)


def test_kl_loss_hand_computed():
  logits = jnp.array([[0.0, np.log(3.0)], [0.0, 0.0]])   # softmax: [1/4, 3/4] and [1/2, 1/2]
  targets = jnp.array([[1.0, 1.0], [2.0, 0.0]])          # normalised: [1/2, 1/2] and [1, 0]
  row0 = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
  row1 = 1.0 * np.log(1.0 / 0.5)                          # 0 log 0 = 0 for the second entry
  np.testing.assert_allclose(losses.kl_loss(logits, targets), (row0 + row1) / 2, rtol=1e-6)
  assert float(losses.kl_loss(logits, jax.nn.softmax(logits))) == pytest.approx(0.0, abs=1e-6)


def test_all_zero_labels_give_finite_loss_and_gradients():
  x = _inputs(seed=4)
  x["labels"][:] = 0.0
  x["neg_labels"][2] = 0.0
  kw = dict(thresholds=dict(text=0.3, clinical=0.3, graph=0.3),
            weights=dict(text=1.0, clinical=1.0, graph=1.0))
  def f(emb, scale):
    return _call({**x, **emb}, scale, **kw)[0]
  emb = {k: jnp.asarray(x[k]) for k in ("image", "text", "graph", "neg_text", "neg_graph",
                                        "labels", "neg_labels")}
  value, grads = jax.value_and_grad(f, argnums=(0, 1))(emb, 5.0)
  assert np.isfinite(value)
  for g in jax.tree.leaves(grads):
    assert np.all(np.isfinite(np.asarray(g)))
  np.testing.assert_array_equal(grads[0]["labels"], 0.0)       # targets carry no gradient
  np.testing.assert_array_equal(grads[0]["neg_labels"], 0.0)
  assert np.any(np.asarray(grads[0]["neg_text"]) != 0)


@pytest.mark.parametrize("loss_type", ["softmax", "sigmoid"])
def test_targets_carry_no_gradient(loss_type):
  """The gradient equals the one with the soft labels computed from frozen copies."""
  x = _inputs(seed=5)
  x["text"] = np.asarray(_np_normalize(x["text"] + x["image"]), np.float32)
  thresholds = dict(text=0.0, clinical=0.2, graph=-0.5)
  weights = dict(text=1.0, clinical=0.5, graph=0.5)
  names = ("image", "text", "graph", "neg_text", "neg_graph")
  emb0 = {k: jnp.asarray(x[k]) for k in names}
  feats0 = losses._assemble(dict(emb0, labels=jnp.asarray(x["labels"]),
                                 neg_labels=jnp.asarray(x["neg_labels"])))

  def reference(emb, scale):
    """Targets from the frozen feats0 (constants), logits from `emb`."""
    b = emb["image"].shape[0]
    big = {"text": jnp.concatenate([emb["text"], emb["neg_text"]]),
           "graph": jnp.concatenate([emb["graph"], emb["neg_graph"]])}
    total = 0.0
    for k in STREAMS:
      y = losses.soft_label_weights(feats0[k] @ feats0[k].T, thresholds[k], num_originals=b)
      for a, c, rows, cols in ((emb["image"], big["text"], b, 2 * b),
                               (big["text"][:b], emb["image"], b, b),
                               (emb["image"], big["graph"], b, 2 * b),
                               (big["graph"][:b], emb["image"], b, b),
                               (big["text"], big["graph"], 2 * b, 2 * b),
                               (big["graph"], big["text"], 2 * b, 2 * b)):
        logits = scale * a @ c.T
        if loss_type == "softmax":
          total += weights[k] * losses.kl_loss(logits, y[:rows, :cols])
        else:
          total += weights[k] * jnp.mean(losses._sigmoid_rows(logits, y[:rows, :cols]))
    return total

  def ours(emb, scale):
    return _call({**x, **emb}, scale, thresholds=thresholds, weights=weights,
                 loss_type=loss_type)[0]

  v_ref, g_ref = jax.value_and_grad(reference, argnums=(0, 1))(emb0, 4.0)
  v_got, g_got = jax.value_and_grad(ours, argnums=(0, 1))(emb0, 4.0)
  np.testing.assert_allclose(v_got, v_ref, rtol=1e-5)
  np.testing.assert_allclose(g_got[1], g_ref[1], rtol=1e-4, atol=1e-6)
  for k in names:
    np.testing.assert_allclose(g_got[0][k], g_ref[0][k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_zero_weight_stream_is_skipped_and_no_graph_drops_pairs():
  x = _inputs(graph=False)
  _, terms = _call(x, 5.0, thresholds=dict(text=0.5, clinical=0.5, graph=0.5),
                   weights=dict(text=1.0, clinical=0.0, graph=1.0))
  assert sorted(terms) == ["I->T/text", "T->I/text"]


def test_bad_loss_configs_are_config_errors():
  with pytest.raises(errors.ConfigError, match="no threshold"):
    _spec(thresholds=dict(text=0.5), weights=dict(text=1.0, graph=1.0))
  with pytest.raises(errors.ConfigError, match="unknown streams"):
    _spec(thresholds=dict(text=0.5), weights=dict(txt=1.0))
  with pytest.raises(errors.ConfigError, match="loss_type"):
    _spec(thresholds=dict(text=0.5), weights=dict(text=1.0), loss_type="hinge")
  with pytest.raises(errors.ConfigError, match="at least one positive"):
    _spec(weights=dict(text=0.0))
  with pytest.raises(errors.ConfigError, match="softclip_temperature > 0"):
    _spec(weights=dict(text=1.0), soft_labels="softclip")
  with pytest.raises(errors.ConfigError, match="sigmoid"):
    _spec(weights=dict(text=1.0), thresholds=dict(text=1.0), logit_bias=-10.0)
  config = common.base_config().loss
  config.weights.graph = 0.5
  with pytest.raises(errors.ConfigError, match="graph.enabled"):
    losses.LossSpec.from_config(config, graph_enabled=False)
  spec = losses.LossSpec.from_config(config, graph_enabled=True)
  assert spec.streams == ("text", "graph") and spec.weights["graph"] == 0.5
