"""Tests for clipmed/models: shapes, Swin windows and masks, BERT padding, CLIP heads."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clipmed import errors
from clipmed.models import BertEncoder, CLIPModel, SwinTransformer, create_model, pool
from clipmed.models import clip as clip_lib
from clipmed.models import swin
from configs import common
from input_pipeline import graphs as graphs_lib


def tiny_model_config(**overrides) -> ml_collections.ConfigDict:
  cfg = common.base_config().model
  cfg.embed_dim = 8
  cfg.image.update(dict(patch_size=4, embed_dim=8, depths=(2, 1), num_heads=(2, 2),
                        window_size=2, drop_path_rate=0.0))
  cfg.text.update(dict(hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                       max_position_embeddings=16, dropout=0.0))
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def clip_inputs(batch=2, image_size=16, length=6, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.normal(size=(batch, image_size, image_size, channels)), jnp.float32)
  ids = jnp.asarray(rng.integers(0, 30, size=(batch, length)), jnp.int32)
  return images, ids, jnp.ones_like(ids)


def as_batch(images, ids, mask, **fields):
  """A model batch (clipmed/batch.py) from images and tokens, plus e.g. graph= / negative=."""
  return dict(image=images, input_ids=ids, attention_mask=mask, **fields)


def random_variables(model, *args, seed=0, **kwargs):
  """Variables with random values, built without compiling `init` (slow on a shared CPU)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, 0.2, s.shape), s.dtype), shapes)


@functools.cache
def jitted_apply(model):
  return jax.jit(model.apply, static_argnames=("train", "method"))


def apply(model, variables, *args, **kwargs):
  """model.apply under jit: one compilation is much faster than op-by-op dispatch here."""
  return jitted_apply(model)(variables, *args, **kwargs)


@pytest.fixture(scope="module")
def clip_tiny():
  """(config, model, variables) with the real initializers, shared by the CLIP tests."""
  cfg = tiny_model_config()
  model = create_model(cfg, vocab_size=30)
  images, ids, mask = clip_inputs()
  batch = as_batch(images, ids, mask)
  variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()
  return cfg, model, variables


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("image_size,patch,depths,heads,window", [
    (32, 4, (2, 2), (1, 2), 4),        # divisible: 8x8 -> 4x4 (window clipped to 4, no shift)
    (40, 4, (2, 2, 2), (1, 2, 2), 4),  # 10x10 padded to 12, 5x5 padded to 8, 3x3 clipped
    (24, 8, (1,), (2,), 7),            # 3x3 grid smaller than the window
    (36, 4, (2, 2), (2, 2), 3),        # odd 9x9 grid: merging pads to 10x10 -> 5x5
])
def test_swin_output_shapes(image_size, patch, depths, heads, window):
  model = SwinTransformer(patch_size=patch, embed_dim=4, depths=depths, num_heads=heads,
                          window_size=window)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, image_size, image_size, 1)),
                  jnp.float32)
  out = apply(model, random_variables(model, x), x)
  assert out.shape == (3, 4 * 2 ** (len(depths) - 1))
  assert np.all(np.isfinite(out))


def test_swin_non_square_input():
  model = SwinTransformer(patch_size=4, embed_dim=4, depths=(2, 2), num_heads=(1, 1),
                          window_size=3)
  x = jnp.ones((1, 24, 40, 3))
  out = apply(model, random_variables(model, x), x)
  assert out.shape == (1, 8)


def test_swin_window_clipped_table_size():
  model = SwinTransformer(patch_size=4, embed_dim=4, depths=(2, 2), num_heads=(1, 1),
                          window_size=3)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 16, 16, 1)))["params"]
  # Stage 0 works on 4x4 > 3: full window. Stage 1 on 2x2 <= 3: window 2, no shift.
  table0 = params["stage0_block1"]["attn"]["relative_position_bias_table"].value
  table1 = params["stage1_block1"]["attn"]["relative_position_bias_table"].value
  assert table0.shape == (5 * 5, 1)
  assert table1.shape == (3 * 3, 1)
  assert swin.effective_window(2, 2, 3, 1) == (2, 0)
  assert swin.effective_window(4, 4, 3, 1) == (3, 1)


def check_clip_outputs(model, variables):
  images, ids, mask = clip_inputs(batch=3, seed=1)
  out = apply(model, variables, as_batch(images, ids, mask), train=False)
  assert out["image"].shape == (3, 8) and out["text"].shape == (3, 8)
  assert out["image"].dtype == jnp.float32 and out["text"].dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(out["image"], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(out["text"], axis=-1), 1.0, rtol=1e-5)
  img = apply(model, variables, images, method=CLIPModel.encode_image)
  txt = apply(model, variables, ids, mask, method=CLIPModel.encode_text)
  np.testing.assert_allclose(img, out["image"], atol=1e-6)
  np.testing.assert_allclose(txt, out["text"], atol=1e-6)


def test_clip_output_shapes_and_norms(clip_tiny):
  _, model, variables = clip_tiny
  check_clip_outputs(model, variables)


def test_clip_mlp_projection_and_mean_pooling():
  cfg = tiny_model_config(projection="mlp")
  cfg.text.pooling = "mean"
  model = create_model(cfg, vocab_size=30)
  variables = random_variables(model, as_batch(*clip_inputs()), train=False)
  assert set(variables["params"]["image_projection"]) == {"hidden", "proj"}
  check_clip_outputs(model, variables)


def test_create_model_vocab_size():
  cfg = tiny_model_config()
  with pytest.raises(ValueError, match="vocab_size"):
    create_model(cfg)

  def embedding_shape(model):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), as_batch(*clip_inputs()),
                                               train=False))
    return shapes["params"]["text_encoder"]["word_embeddings"]["embedding"].value.shape

  assert embedding_shape(create_model(cfg, vocab_size=37)) == (37, 8)
  cfg.text.vocab_size = 11  # an explicit vocab size wins over the tokenizer's
  assert embedding_shape(create_model(cfg, vocab_size=37)) == (11, 8)
  # The plain (unfrozen) config block works too, as CLIPModel(config.model).
  assert embedding_shape(CLIPModel(cfg)) == (11, 8)


@pytest.mark.parametrize("projection", ["linear", "mlp"])
def test_every_param_has_logical_axes(projection, clip_tiny):
  if projection == "linear":
    variables = clip_tiny[2]
  else:
    model = create_model(tiny_model_config(projection=projection), vocab_size=30)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), as_batch(*clip_inputs()),
                                                  train=False))
  leaves = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  for box in leaves:
    assert len(box.names) == box.value.ndim
    named = [n for n in box.names if n is not None]
    assert len(named) == len(set(named)), box.names  # a mesh axis may appear only once
    assert box.value.dtype == jnp.float32
  specs = nn.get_partition_spec(variables)
  assert len(jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
             ) == len(leaves)


# ----------------------------------------------------------------------------- Swin internals


def test_relative_position_index_window2():
  # Tokens in row-major order (0,0), (0,1), (1,0), (1,1); index = (dh + 1) * 3 + (dw + 1).
  expected = np.array([[4, 3, 1, 0],
                       [5, 4, 2, 1],
                       [7, 6, 4, 3],
                       [8, 7, 5, 4]])
  np.testing.assert_array_equal(swin.relative_position_index(2), expected)


def test_shifted_window_mask_by_hand():
  # 4x4 grid, window 2, shift 1. After rolling by -1, rows/cols 0-1 are region 0, 2 region 1 and
  # 3 (wrapped around from 0) region 2.
  mask = swin.shifted_window_mask(4, 4, window=2, shift=1)
  assert mask.shape == (4, 4, 4)
  allowed = mask == 0
  # Window 0 (rows 0-1, cols 0-1): one region, everything attends.
  assert allowed[0].all()
  # Window 1 (rows 0-1, cols 2-3): column 3 wrapped around; tokens 0,2 (col 2) vs 1,3 (col 3).
  np.testing.assert_array_equal(allowed[1], np.array([[1, 0, 1, 0],
                                                      [0, 1, 0, 1],
                                                      [1, 0, 1, 0],
                                                      [0, 1, 0, 1]], bool))
  # Window 2 (rows 2-3, cols 0-1): row 3 wrapped; tokens 0,1 (row 2) vs 2,3 (row 3).
  np.testing.assert_array_equal(allowed[2], np.array([[1, 1, 0, 0],
                                                      [1, 1, 0, 0],
                                                      [0, 0, 1, 1],
                                                      [0, 0, 1, 1]], bool))
  # Window 3 (rows 2-3, cols 2-3): four tokens from four regions, each attends only to itself.
  np.testing.assert_array_equal(allowed[3], np.eye(4, dtype=bool))
  assert set(np.unique(mask)) == {0.0, swin.MASK_VALUE}
  assert swin.shifted_window_mask(4, 4, window=2, shift=0) is None


def test_shifted_mask_never_joins_tokens_that_were_not_adjacent():
  # Generic check on a 6x6 grid, window 3, shift 1: two tokens of one shifted window may attend
  # iff their original (unrolled) positions lie on the same side of every wrap-around seam.
  n, window, shift = 6, 3, 1
  mask = swin.shifted_window_mask(n, n, window, shift)
  coords = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1)  # [n, n, 2]
  # Position p of the rolled grid holds original position (p + shift) mod n; a token "wrapped"
  # when that position is < shift along an axis.
  wrapped = ((coords + shift) % n) < shift  # [n, n, 2]
  win = np.asarray(swin.window_partition(wrapped[None].astype(np.int32), window))  # [nW, N, 2]
  region_origin = (coords + shift) % n
  orig = np.asarray(swin.window_partition(region_origin[None], window))  # [nW, N, 2]
  for w in range(mask.shape[0]):
    for i in range(window * window):
      for j in range(window * window):
        same_side = np.all(win[w, i] == win[w, j])
        # Tokens on the same side are within `window` of each other in the original image too.
        if same_side:
          assert np.all(np.abs(orig[w, i] - orig[w, j]) < window)
        assert (mask[w, i, j] == 0) == same_side


def test_cyclic_shift_and_window_round_trip():
  x = jnp.arange(2 * 6 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 6, 3)
  shifted = jnp.roll(x, (-1, -1), axis=(1, 2))
  windows = swin.window_partition(shifted, 3)
  assert windows.shape == (2 * 4, 9, 3)
  # The first window of the first image holds rolled rows 0-2, cols 0-2 in row-major order.
  np.testing.assert_array_equal(windows[0].reshape(3, 3, 3), shifted[0, :3, :3])
  back = jnp.roll(swin.window_reverse(windows, 3, 6, 6), (1, 1), axis=(1, 2))
  np.testing.assert_array_equal(back, x)


# ----------------------------------------------------------------------------- BERT


def tiny_bert(**kw):
  args = dict(vocab_size=20, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=16,
              max_position_embeddings=12, dropout=0.0)
  args.update(kw)
  return BertEncoder(**args)


def test_bert_padding_does_not_change_real_tokens():
  model = tiny_bert()
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 20, size=(2, 4))
  short = random_variables(model, jnp.asarray(ids), jnp.ones((2, 4), jnp.int32))
  out_short = apply(model, short, jnp.asarray(ids), jnp.ones((2, 4), jnp.int32))
  padded_ids = np.concatenate([ids, rng.integers(0, 20, size=(2, 5))], axis=1)  # garbage pads
  mask = np.concatenate([np.ones((2, 4)), np.zeros((2, 5))], axis=1).astype(np.int32)
  out_padded = apply(model, short, jnp.asarray(padded_ids), jnp.asarray(mask))
  assert out_padded.shape == (2, 9, 8)
  np.testing.assert_allclose(out_padded[:, :4], out_short, atol=1e-5)


def test_bert_rejects_too_long_text():
  model = tiny_bert(max_position_embeddings=4)
  with pytest.raises(ValueError, match="max_text_length"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 5), jnp.int32),
                   jnp.ones((1, 5), jnp.int32))


def test_mean_pooling_ignores_pads():
  hidden = jnp.asarray([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
                        [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
  mask = jnp.asarray([[1, 1, 0], [1, 1, 1]])
  np.testing.assert_allclose(pool(hidden, mask, "mean"), [[2.0, 3.0], [7.0, 8.0]])
  np.testing.assert_allclose(pool(hidden, mask, "cls"), [[1.0, 2.0], [5.0, 6.0]])
  with pytest.raises(ValueError, match="pooling"):
    pool(hidden, mask, "max")


# ----------------------------------------------------------------------------- CLIP


def test_logit_scale_init_and_clipping(clip_tiny):
  cfg, model, variables = clip_tiny
  assert float(variables["params"]["log_logit_scale"].value) == pytest.approx(math.log(1 / 0.07))
  images, ids, mask = clip_inputs()
  out = apply(model, variables, as_batch(images, ids, mask), train=False)
  assert float(out["logit_scale"]) == pytest.approx(1 / 0.07, rel=1e-5)
  big = jax.tree.map(lambda x: x, variables)
  big["params"]["log_logit_scale"] = big["params"]["log_logit_scale"].replace_boxed(
      jnp.asarray(math.log(500.0), jnp.float32))
  out = apply(model, big, as_batch(images, ids, mask), train=False)
  assert float(out["logit_scale"]) == pytest.approx(cfg.logit_scale_max)


def test_dropout_and_drop_path_only_in_training(clip_tiny):
  cfg, _, variables = clip_tiny
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.image.drop_path_rate = 0.5
  cfg.text.dropout = 0.3
  model = create_model(cfg, vocab_size=30)  # same parameters, other rates
  images, ids, mask = clip_inputs(batch=4, seed=2)
  eval1 = apply(model, variables, as_batch(images, ids, mask), train=False)  # needs no rng
  eval2 = apply(model, variables, as_batch(images, ids, mask), train=False)
  np.testing.assert_array_equal(eval1["image"], eval2["image"])
  train = [apply(model, variables, as_batch(images, ids, mask), train=True,
                       rngs={"dropout": jax.random.key(s)}) for s in (1, 2)]
  assert not np.allclose(train[0]["image"], train[1]["image"])
  assert not np.allclose(train[0]["text"], train[1]["text"])
  assert not np.allclose(train[0]["image"], eval1["image"])


def test_remat_same_params_and_outputs(clip_tiny):
  cfg, model, variables = clip_tiny
  remat_model = create_model(ml_collections.ConfigDict(dict(cfg.to_dict(), remat=True)),
                             vocab_size=30)
  images, ids, mask = clip_inputs()
  shapes = jax.eval_shape(lambda: remat_model.init(jax.random.key(0), as_batch(images, ids, mask),
                                                   train=False))
  assert jax.tree.structure(shapes) == jax.tree.structure(variables)
  out = apply(model, variables, as_batch(images, ids, mask), train=False)
  out_remat = apply(remat_model, variables, as_batch(images, ids, mask), train=False)
  np.testing.assert_allclose(out["image"], out_remat["image"], atol=1e-6)
  np.testing.assert_allclose(out["text"], out_remat["text"], atol=1e-6)


def test_bad_config_messages():
  inputs = as_batch(*clip_inputs())
  with pytest.raises(errors.ConfigError, match="config.model.dtype"):
    model = create_model(tiny_model_config(dtype="float16"), vocab_size=30)
    jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))
  with pytest.raises(ValueError, match="config.model.projection"):
    model = create_model(tiny_model_config(projection="deep"), vocab_size=30)
    jax.eval_shape(lambda: model.init(jax.random.key(0), inputs, train=False))
  for overrides, message in ((dict(dtype="float16"), "config.model.dtype"),
                             (dict(projection="deep"), "config.model.projection")):
    with pytest.raises(errors.ConfigError, match=message):
      clip_lib.check_model_config(tiny_model_config(**overrides))
  with pytest.raises(errors.ConfigError, match="max_position_embeddings=16"):
    clip_lib.check_model_config(tiny_model_config(), max_text_length=32)


# ----------------------------------------------------------------------------- negatives, graphs

GRAPH_BUDGET = dict(max_nodes=6, max_edges=5, max_node_tokens=3)


def _node_tokenize(text):
  return [1 + sum(map(ord, word)) % 29 for word in text.split()]  # ids in [1, 30)


def graph_inputs(batch=2, seed=0):
  """Padded graph arrays [batch, ...] of random small report graphs (the last one empty)."""
  rng = np.random.default_rng(seed)
  examples = []
  for i in range(batch):
    num = 0 if i == batch - 1 else int(rng.integers(1, 5))
    nodes = [(f"w{int(rng.integers(100))} side", graphs_lib.NODE_TYPES[int(rng.integers(4))])
             for _ in range(num)]
    edges = [(int(rng.integers(num)), int(rng.integers(num)),
              graphs_lib.RELATIONS[int(rng.integers(3))]) for _ in range(min(num, 3))]
    examples.append(dict(nodes=nodes, edges=edges))
  arrays = graphs_lib.graph_batch(examples, _node_tokenize, **GRAPH_BUDGET)
  return {k: jnp.asarray(v) for k, v in arrays.items()}


def graph_model_config():
  cfg = tiny_model_config()
  cfg.graph = dict(enabled=True, hidden_size=8, num_layers=2, **GRAPH_BUDGET)
  return cfg


@pytest.fixture(scope="module")
def clip_graph():
  """(model, variables) of a tiny CLIP with the graph encoder enabled."""
  model = create_model(graph_model_config(), vocab_size=30)
  batch = as_batch(*clip_inputs(), graph=graph_inputs())
  variables = jax.jit(lambda: model.init(jax.random.key(0), batch, train=False))()
  return model, variables


def test_clip_negatives_and_graphs_shapes(clip_graph):
  model, variables = clip_graph
  images, ids, mask = clip_inputs(batch=3, seed=1)
  _, neg_ids, neg_mask = clip_inputs(batch=3, seed=2)
  neg_mask = neg_mask.at[:, 4:].set(0)
  graph, neg_graph = graph_inputs(3, seed=1), graph_inputs(3, seed=2)
  negative = dict(input_ids=neg_ids, attention_mask=neg_mask, graph=neg_graph)
  out = apply(model, variables, as_batch(images, ids, mask, graph=graph, negative=negative),
              train=False)
  assert set(out) == {"image", "text", "graph", "negative", "logit_scale"}
  assert set(out["negative"]) == {"text", "graph"}
  embeddings = dict(image=out["image"], text=out["text"], graph=out["graph"],
                    neg_text=out["negative"]["text"], neg_graph=out["negative"]["graph"])
  for key, value in embeddings.items():
    assert value.shape == (3, 8) and value.dtype == jnp.float32, key
    np.testing.assert_allclose(np.linalg.norm(value, axis=-1), 1.0, rtol=1e-5)
  # One interleaved call equals separate calls on the reports and on the negatives.
  enc_text = functools.partial(apply, model, variables, method=CLIPModel.encode_text)
  enc_graph = functools.partial(apply, model, variables, method=CLIPModel.encode_graph)
  np.testing.assert_allclose(out["text"], enc_text(ids, mask), atol=1e-5)
  np.testing.assert_allclose(embeddings["neg_text"], enc_text(neg_ids, neg_mask), atol=1e-5)
  np.testing.assert_allclose(out["graph"], enc_graph(graph), atol=1e-5)
  np.testing.assert_allclose(embeddings["neg_graph"], enc_graph(neg_graph), atol=1e-5)
  assert not np.allclose(out["text"], embeddings["neg_text"], atol=1e-3)
  assert not np.allclose(out["graph"], embeddings["neg_graph"], atol=1e-3)
  # Graphs without negatives.
  only_graph = apply(model, variables, as_batch(images, ids, mask, graph=graph), train=False)
  assert set(only_graph) == {"image", "text", "graph", "logit_scale"}
  np.testing.assert_allclose(only_graph["graph"], out["graph"], atol=1e-5)


def test_clip_negatives_without_graphs(clip_tiny):
  _, model, variables = clip_tiny
  images, ids, mask = clip_inputs(batch=3, seed=1)
  _, neg_ids, neg_mask = clip_inputs(batch=3, seed=2)
  negative = dict(input_ids=neg_ids, attention_mask=neg_mask)
  out = apply(model, variables, as_batch(images, ids, mask, negative=negative), train=False)
  assert set(out) == {"image", "text", "negative", "logit_scale"}
  enc_text = functools.partial(apply, model, variables, method=CLIPModel.encode_text)
  np.testing.assert_allclose(out["negative"]["text"], enc_text(neg_ids, neg_mask), atol=1e-5)


def test_clip_graph_params_and_logical_axes(clip_graph):
  _, variables = clip_graph
  params = variables["params"]
  assert "graph_encoder" in params
  assert set(params["graph_encoder"]) >= {"token_embeddings", "conv0", "conv1", "projection"}
  embed = params["graph_encoder"]["token_embeddings"]["embedding"]
  assert embed.value.shape == (30, 8)  # node tokens share the text vocabulary
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)


def test_graph_disabled_has_no_graph_params(clip_tiny):
  cfg, model, variables = clip_tiny
  assert not cfg.graph.enabled and "graph_encoder" not in variables["params"]
  images, ids, mask = clip_inputs()
  with pytest.raises(ValueError, match="graph.enabled"):
    model.apply(variables, as_batch(images, ids, mask, graph=graph_inputs()), train=False)


def test_graph_input_errors(clip_graph):
  model, variables = clip_graph
  images, ids, mask = clip_inputs()
  incomplete = {k: v for k, v in graph_inputs().items() if k != "senders"}
  with pytest.raises(ValueError, match=r"lacks the arrays \['senders'\]"):
    model.apply(variables, as_batch(images, ids, mask, graph=incomplete), train=False)
  with pytest.raises(ValueError, match="batch has no report graphs"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), as_batch(images, ids, mask),
                                      train=False))


@pytest.mark.slow
def test_activations_are_sharded_by_the_logical_rules():
  """With the config's rules in scope, encoder boundaries constrain the batch axis of activations
  (so FSDP / tensor-parallel rules shard activations too); without rules nothing is added."""
  from conftest import run_with_devices  # pylint: disable=g-import-not-at-top
  out = run_with_devices("""
    import jax, flax.linen as nn
    from jax.sharding import AxisType
    from clipmed import sharding
    from clipmed.models import create_model
    from tests.test_models import tiny_model_config, clip_inputs, as_batch
    model = create_model(tiny_model_config(), vocab_size=30)
    batch = as_batch(*clip_inputs(batch=8))
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
    params = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), batch, train=False)))
    # Two jitted functions: flax's rules context is not part of jax's trace cache key.
    apply = lambda: jax.jit(lambda p, b: model.apply(p, b, train=False))
    with mesh:
      plain = apply().lower(params, batch).as_text().count("sharding_constraint")
      with nn.logical_axis_rules([(sharding.BATCH, "data")]):
        lowered = apply().lower(params, batch)
    text = lowered.as_text()
    constrained = [line for line in text.splitlines() if "sharding_constraint" in line]
    print(plain, len(constrained), all('"data"' in line for line in constrained))
  """)
  plain, constrained, on_data_axis = out.split()
  # Image in/features/embedding, text ids/hidden/embedding: at least six boundaries.
  assert plain == "0" and int(constrained) >= 6 and on_data_axis == "True"

