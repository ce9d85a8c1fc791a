"""Tests for host graph padding (input_pipeline/graphs.py) and the GCN (clipmed/models/gcn.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipmed import batch as batch_lib
from clipmed.models import gcn
from input_pipeline import graphs

VOCAB = 50
BUDGET = dict(max_nodes=8, max_edges=10, max_node_tokens=4)


def _tokenize(text):
  return [1 + (sum(map(ord, w)) % (VOCAB - 1)) for w in text.split()]


GRAPH = dict(nodes=[("pleural effusion", "OBS-DP"), ("left lung base", "ANAT-DP"),
                    ("small", "OBS-DP"), ("pneumonia", "OBS-U"), ("pneumothorax", "OBS-DA")],
             edges=[(0, 1, "located_at"), (2, 0, "modify"), (0, 3, "suggestive_of"),
                    (4, 1, "located_at")])
OTHER = dict(nodes=[("heart", "ANAT-DP"), ("enlarged", "OBS-DP")],
             edges=[(1, 0, "located_at")])


def _permuted(graph, order, edge_order):
  new_index = {old: new for new, old in enumerate(order)}
  nodes = [graph["nodes"][old] for old in order]
  edges = [(new_index[s], new_index[d], r) for s, d, r in graph["edges"]]
  return dict(nodes=nodes, edges=[edges[i] for i in edge_order])


def _encode(batch, params=None):
  model = gcn.GraphEncoder(vocab_size=VOCAB, embed_dim=16, hidden_size=32)
  arrays = {k: jnp.asarray(v) for k, v in batch.items()}
  if params is None:
    params = model.init(jax.random.key(0), arrays)
  return model.apply(params, arrays), params


def test_pad_graphs_adds_one_padding_graph():
  g1, _ = graphs.to_graphs_tuple(GRAPH, _tokenize, max_node_tokens=4)
  g2, _ = graphs.to_graphs_tuple(OTHER, _tokenize, max_node_tokens=4)
  padded = graphs.pad_graphs([g1, g2], max_nodes=10, max_edges=8)
  np.testing.assert_array_equal(padded.n_node, [5, 2, 3])
  np.testing.assert_array_equal(padded.n_edge, [4, 1, 3])
  np.testing.assert_array_equal(padded.senders[:5], [0, 2, 0, 4, 6])   # OTHER offset by 5
  np.testing.assert_array_equal(padded.receivers[:5], [1, 0, 3, 1, 5])
  assert np.all(padded.senders[5:] >= 7) and np.all(padded.receivers[5:] >= 7)  # padding graph
  assert padded.nodes["tokens"].shape == (10, 4)
  with pytest.raises(ValueError, match="max_nodes"):
    graphs.pad_graphs([g1, g2], max_nodes=7, max_edges=8)


def test_graph_example_static_shapes_and_truncation():
  small = graphs.graph_example(OTHER, _tokenize, **BUDGET)
  big_graph = dict(nodes=[(f"node {i}", "OBS-DP") for i in range(12)],
                   edges=[(i, i + 1, "modify") for i in range(11)])
  big, truncated = graphs.graph_example(big_graph, _tokenize, return_truncated=True, **BUDGET)
  assert truncated
  assert not graphs.graph_example(OTHER, _tokenize, return_truncated=True, **BUDGET)[1]
  for ex in (small, big):
    assert sorted(ex) == sorted(batch_lib.GRAPH_FIELDS)
    assert ex["node_tokens"].shape == (8, 4)
    assert ex["senders"].shape == (10,)
    assert ex["n_node"].shape == (2,) and ex["n_node"].sum() == 8
    assert ex["n_edge"].sum() == 10
    assert all(v.dtype == np.int32 for v in ex.values())
  np.testing.assert_array_equal(big["n_node"], [7, 1])
  np.testing.assert_array_equal(big["n_edge"], [6, 4])  # edges among the first 7 nodes


def test_bad_graphs_name_the_problem():
  with pytest.raises(ValueError, match="study 7.*node 1 has type 'OBS'"):
    graphs.graph_example(dict(nodes=[("a", "OBS-DP"), ("b", "OBS")], edges=[]), _tokenize,
                         where="study 7", **BUDGET)
  with pytest.raises(ValueError, match="edge 0 .*0 -> 5"):
    graphs.graph_example(dict(nodes=[("a", "OBS-DP")], edges=[(0, 5, "modify")]), _tokenize,
                         **BUDGET)
  with pytest.raises(ValueError, match="relation 'near'"):
    graphs.graph_example(dict(nodes=[("a", "OBS-DP")], edges=[(0, 0, "near")]), _tokenize,
                         **BUDGET)


def test_padding_does_not_change_the_readout():
  batch = graphs.graph_batch([GRAPH, OTHER], _tokenize, **BUDGET)
  emb, params = _encode(batch)
  wider = graphs.graph_batch([GRAPH, OTHER], _tokenize, max_nodes=20, max_edges=31,
                             max_node_tokens=4)
  emb_wide, _ = _encode(wider, params)
  assert emb.shape == (2, 16)
  np.testing.assert_allclose(emb_wide, emb, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
  # Junk in the padding slots is ignored: only n_node / n_edge say what is real.
  junk = {k: v.copy() for k, v in batch.items()}
  junk["node_tokens"][:, -1] = 7
  junk["node_token_mask"][:, -1] = 1
  junk["senders"][:, -1] = 0
  junk["receivers"][:, -1] = 1
  np.testing.assert_allclose(_encode(junk, params)[0], emb, atol=1e-6)


def test_node_and_edge_order_do_not_matter():
  perm = _permuted(GRAPH, [3, 0, 4, 2, 1], [2, 0, 3, 1])
  emb, params = _encode(graphs.graph_batch([GRAPH, perm], _tokenize, **BUDGET))
  np.testing.assert_allclose(emb[1], emb[0], atol=1e-5)


def test_structure_matters_and_examples_are_independent():
  rewired = dict(nodes=GRAPH["nodes"], edges=[(1, 0, "located_at")] + GRAPH["edges"][1:])
  emb, params = _encode(graphs.graph_batch([GRAPH, rewired, OTHER], _tokenize, **BUDGET))
  assert np.max(np.abs(emb[0] - emb[1])) > 1e-4   # edges (and their direction) are used
  alone, _ = _encode(graphs.graph_batch([OTHER, GRAPH, GRAPH], _tokenize, **BUDGET), params)
  np.testing.assert_allclose(alone[0], emb[2], atol=1e-6)


def test_empty_graph_and_gradients_are_finite():
  batch = graphs.graph_batch([dict(nodes=[], edges=[]), GRAPH], _tokenize, **BUDGET)
  model = gcn.GraphEncoder(vocab_size=VOCAB, embed_dim=16, hidden_size=32)
  arrays = {k: jnp.asarray(v) for k, v in batch.items()}
  params = model.init(jax.random.key(1), arrays)
  emb = model.apply(params, arrays)
  assert np.all(np.isfinite(emb))
  grads = jax.grad(lambda p: jnp.sum(model.apply(p, arrays) ** 3))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # The empty example reads out the learned empty-graph vector.
  empty_grad = grads["params"]["empty_graph"]
  assert np.any(np.asarray(empty_grad) != 0)


def test_jit_static_shapes():
  model = gcn.GraphEncoder(vocab_size=VOCAB, embed_dim=16, hidden_size=32)
  a = jax.tree.map(jnp.asarray, graphs.graph_batch([GRAPH, OTHER], _tokenize, **BUDGET))
  b = jax.tree.map(jnp.asarray, graphs.graph_batch([OTHER, OTHER], _tokenize, **BUDGET))
  params = model.init(jax.random.key(0), a)
  apply = jax.jit(model.apply)
  apply(params, a)
  apply(params, b)
  assert apply._cache_size() == 1


@pytest.mark.slow
def test_batch_sharded_encoding_stays_local():
  """On 8 devices (Auto mesh, as clipmed/sharding.py) the output stays batch-sharded, equals the
  single-device result, and the compiled program gathers nothing across devices."""
  from conftest import run_with_devices  # pylint: disable=g-import-not-at-top
  out = run_with_devices("""
    import jax, jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from clipmed.models import gcn
    from input_pipeline import graphs
    tok = lambda s: [1 + len(w) for w in s.split()]
    g = dict(nodes=[("effusion", "OBS-DP"), ("left base", "ANAT-DP"), ("small", "OBS-DP")],
             edges=[(0, 1, "located_at"), (2, 0, "modify")])
    o = dict(nodes=[("heart", "ANAT-DP"), ("enlarged", "OBS-DP")], edges=[(1, 0, "located_at")])
    batch = graphs.graph_batch([g, o] * 8, tok, max_nodes=8, max_edges=8, max_node_tokens=4)
    arrays = {k: jnp.asarray(v) for k, v in batch.items()}
    model = gcn.GraphEncoder(vocab_size=20, embed_dim=16, hidden_size=32)
    params = model.init(jax.random.key(0), arrays)
    ref = model.apply(params, arrays)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    sharded = jax.device_put(arrays, NamedSharding(mesh, P("data")))
    params = jax.device_put(params, NamedSharding(mesh, P()))
    apply = jax.jit(model.apply)
    out = apply(params, sharded)
    hlo = apply.lower(params, sharded).compile().as_text()
    print(out.sharding.spec == P("data"), float(jnp.max(jnp.abs(out - ref))),
          "all-gather" in hlo or "all-to-all" in hlo)
  """)
  spec_ok, diff, gathers = out.split()
  assert spec_ok == "True" and float(diff) < 1e-5 and gathers == "False"
