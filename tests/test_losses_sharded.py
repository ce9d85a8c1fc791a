"""sharded_clinic_loss on 8 forced CPU devices equals clinic_loss on one (values and gradients)."""

import json

import pytest

from conftest import run_with_devices

_CODE = r"""
import functools, json, re
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from clipmed import losses

assert jax.device_count() == 8
B, D = 16, 8
rng = np.random.default_rng(0)
def unit(shape):
  x = rng.normal(size=shape)
  return jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), jnp.float32)
emb = {k: unit((B, D)) for k in ("image", "text", "graph", "neg_text", "neg_graph")}
emb["text"] = emb["text"] + emb["image"]
emb["text"] = emb["text"] / jnp.linalg.norm(emb["text"], axis=-1, keepdims=True)
emb["text"] = emb["text"].at[5].set(emb["text"][12])       # a duplicate across devices
labels = jnp.asarray(rng.random((B, 14)) > 0.6, jnp.float32).at[3].set(0.0)
neg_labels = jnp.asarray(rng.random((B, 14)) > 0.6, jnp.float32)
common = dict(thresholds=dict(text=0.1, clinical=0.3, graph=-0.1),
              weights=dict(text=1.0, clinical=0.5, graph=0.3))
batch = {"labels": labels, "negative": {"labels": neg_labels}}

def loss(fn, e, scale, bias, **kw):
  outputs = {"image": e["image"], "text": e["text"], "graph": e["graph"], "logit_scale": scale,
             "negative": {"text": e["neg_text"], "graph": e["neg_graph"]}}
  if bias is not None:
    outputs["logit_bias"] = bias
  return fn(outputs, batch, losses.LossSpec(**common, **kw))

results = {}
variants = {"softmax": dict(loss_type="softmax"), "sigmoid": dict(loss_type="sigmoid"),
            "softclip": dict(soft_labels="softclip", softclip_temperature=0.3)}
meshes = {
    "explicit": (jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,)), ("data",)),
    "auto": (jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,)), ("data",)),
    "two_axes": (jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Explicit,) * 2),
                 ("data", "fsdp")),
}
for vname, kw in variants.items():
  bias = jnp.float32(-1.5) if kw.get("loss_type") == "sigmoid" else None
  def single(e, s, b):
    return loss(losses.clinic_loss, e, s, b, **kw)
  ref = jax.jit(jax.value_and_grad(lambda e, s, b: single(e, s, b)[0], argnums=(0, 1, 2)))
  (ref_v, ref_g) = ref(emb, jnp.float32(6.0), bias)
  ref_terms = jax.jit(single)(emb, jnp.float32(6.0), bias)[1]
  for mname, (mesh, axes) in meshes.items():
    if vname != "softmax" and mname != "explicit":
      continue
    fn = functools.partial(losses.sharded_clinic_loss, mesh=mesh, data_axes=axes)
    def sharded(e, s, b):
      return loss(fn, e, s, b, **kw)
    e_sh = jax.device_put(emb, NamedSharding(mesh, P(axes)))
    vg = jax.jit(jax.value_and_grad(lambda e, s, b: sharded(e, s, b)[0], argnums=(0, 1, 2)))
    v, g = vg(e_sh, jnp.float32(6.0), bias)
    terms = jax.jit(sharded)(e_sh, jnp.float32(6.0), bias)[1]
    hlo = vg.lower(e_sh, jnp.float32(6.0), bias).compile().as_text()
    grad_diff = max(float(jnp.max(jnp.abs(g[0][k] - ref_g[0][k]))) for k in emb)
    results[f"{vname}/{mname}"] = dict(
        value=float(v), ref=float(ref_v), grad_diff=grad_diff,
        grad_max=max(float(jnp.max(jnp.abs(ref_g[0][k]))) for k in emb),
        scale_grad=[float(g[1]), float(ref_g[1])],
        bias_grad=None if bias is None else [float(g[2]), float(ref_g[2])],
        term_diff=max(abs(float(terms[k] - ref_terms[k])) / max(1.0, abs(float(ref_terms[k])))
                  for k in ref_terms),
        same_terms=sorted(terms) == sorted(ref_terms), num_terms=len(terms),
        full_matrix=bool(re.search(r"f32\[%d,%d\]" % (2 * B, 2 * B), hlo)),
        row_block=bool(re.search(r"f32\[%d,%d\]" % (2 * B // 8, 2 * B), hlo)))
print(json.dumps(results))
"""


@pytest.mark.slow
def test_sharded_equals_single_device():
  results = json.loads(run_with_devices(_CODE, 8).strip().splitlines()[-1])
  assert set(results) == {"softmax/explicit", "softmax/auto", "softmax/two_axes",
                          "sigmoid/explicit", "softclip/explicit"}
  for name, r in results.items():
    assert r["same_terms"] and r["num_terms"] == 18, name
    assert r["value"] == pytest.approx(r["ref"], abs=1e-5, rel=1e-5), name
    assert r["term_diff"] < 1e-5, name
    assert r["grad_diff"] < 1e-5, (name, r["grad_diff"])
    assert r["grad_max"] > 1e-3, name   # the gradients compared are not trivially zero
    assert r["scale_grad"][0] == pytest.approx(r["scale_grad"][1], abs=1e-5, rel=1e-5), name
    if r["bias_grad"] is not None:
      assert r["bias_grad"][0] == pytest.approx(r["bias_grad"][1], abs=1e-5, rel=1e-5), name
    # Each device holds its 2B/n x 2B row blocks, never the 2B x 2B matrix.
    assert r["row_block"] and not r["full_matrix"], name
