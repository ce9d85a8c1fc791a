"""Tests for input_pipeline.pipeline (Grain over ArrayRecord) on a tiny SynthCXR build."""

import dataclasses
import json

import jax
import ml_collections
import numpy as np
import pytest

from clipmed import batch as batch_lib
from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import graphs, pipeline, synthcxr, tokenizer as tokenizer_lib, transforms
from tests.conftest import run_with_devices

NUM_TRAIN, NUM_TEST = 48, 16
SYNTH = dict(image_size=64, num_train=NUM_TRAIN, num_validation=16, num_test=NUM_TEST, seed=0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A tiny 64 px SynthCXR build (about 5 s) shared by this module's tests."""
  root = str(tmp_path_factory.mktemp("tfds"))
  synthcxr.prepare(root, vocab_size=300, **SYNTH)
  return root


@pytest.fixture(scope="module")
def data(data_dir):
  """(sources by split, tokenizer)."""
  sources = {s: synthcxr.data_source(data_dir, s, **SYNTH)
             for s in ("train", "validation", "test")}
  tokenizer = tokenizer_lib.load_tokenizer(synthcxr.tokenizer_dir(data_dir, **SYNTH))
  return sources, tokenizer


def _config(**overrides):
  cfg = ml_collections.ConfigDict(dict(
      image_size=64, channels=1, mean=0.5, std=0.25, max_text_length=48, uncertain_as=1.0,
      augment=dict(enabled=True, crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1),
                   rotation_degrees=5.0, brightness=0.1, contrast=0.1),
      worker_count=0, worker_buffer_size=2, text_field="report", read_threads=2,
      read_buffer_size=4))
  cfg.update(overrides)
  return cfg


GRAPH_BUDGET = batch_lib.GraphBudget(max_nodes=48, max_edges=32, max_node_tokens=8)


def _spec(cfg, *, negatives=False, graph=None):
  return batch_lib.BatchSpec(image_size=cfg.image_size, channels=cfg.channels,
                             max_text_length=cfg.max_text_length, num_classes=14,
                             negatives=negatives, graph=graph)


def _train(data, cfg=None, *, batch=8, seed=0, negatives=False, graph=None, **kw):
  sources, tokenizer = data
  cfg = cfg or _config()
  return pipeline.create_train_iterator(
      cfg, source=sources["train"], tokenizer=tokenizer,
      spec=_spec(cfg, negatives=negatives, graph=graph), class_names=chexpert.CATEGORIES,
      global_batch_size=batch, seed=seed, **kw)


def _iterate(source, tokenizer, cfg, batch_size, *, negatives=False, graph=None):
  return pipeline.iterate_split(cfg, source=source, tokenizer=tokenizer,
                                spec=_spec(cfg, negatives=negatives, graph=graph),
                                class_names=chexpert.CATEGORIES, batch_size=batch_size)


def _metadata(source, text_field="report"):
  return pipeline.split_metadata(source, text_field=text_field, num_classes=14)


def _assert_trees_equal(a, b):
  assert set(a) == set(b)
  for k in a:
    if isinstance(a[k], dict):
      _assert_trees_equal(a[k], b[k])
    else:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _identify(data, split, cfg):
  """Maps un-augmented image bytes -> row index of `split` (images are unique per study)."""
  sources, tokenizer = data
  ids = {}
  for b, batch in enumerate(_iterate(sources[split], tokenizer, cfg, 8)):
    for r in np.flatnonzero(batch["valid"]):
      ids[batch["image"][r].tobytes()] = b * 8 + r
  assert len(ids) == len(sources[split])
  return ids


def test_train_batch_shapes_dtypes_and_ranges(data):
  cfg = _config(image_size=48, channels=3, max_text_length=24)
  batch = next(_train(data, cfg, batch=8))
  assert set(batch) == {"image", "input_ids", "attention_mask", "labels"}
  assert batch["image"].shape == (8, 48, 48, 3) and batch["image"].dtype == np.float32
  assert batch["input_ids"].shape == (8, 24) and batch["input_ids"].dtype == np.int32
  assert batch["attention_mask"].shape == (8, 24) and batch["attention_mask"].dtype == np.int32
  assert batch["labels"].shape == (8, 14) and batch["labels"].dtype == np.float32
  lo, hi = (0 - cfg.mean) / cfg.std, (1 - cfg.mean) / cfg.std
  assert batch["image"].min() >= lo - 1e-5 and batch["image"].max() <= hi + 1e-5
  assert batch["image"].std() > 0.1
  np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
  assert set(np.unique(batch["attention_mask"])) <= {0, 1}
  assert np.all(batch["attention_mask"][:, 0] == 1)
  tokenizer = data[1]
  assert np.all(batch["input_ids"][:, 0] == tokenizer.cls_token_id)
  assert np.all(batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id)
  assert set(np.unique(batch["labels"])) <= {0.0, 1.0}  # not L2-normalised


def test_same_seed_same_batches_and_other_seed_other_order(data):
  first, again = _take(_train(data, seed=3), 3), _take(_train(data, seed=3), 3)
  for a, b in zip(first, again):
    _assert_trees_equal(a, b)
  other = _take(_train(data, seed=4), 3)
  assert not np.array_equal(np.concatenate([b["input_ids"] for b in first]),
                            np.concatenate([b["input_ids"] for b in other]))


def test_every_epoch_is_a_new_permutation_of_the_split(data):
  cfg = _config(augment=dict(enabled=False))
  ids = _identify(data, "train", cfg)
  it = _train(data, cfg, batch=8)
  steps = NUM_TRAIN // 8
  epochs = [[ids[row.tobytes()] for b in _take(it, steps) for row in b["image"]]
            for _ in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(NUM_TRAIN))
  assert epochs[0] != epochs[1] and epochs[0] != list(range(NUM_TRAIN))


def test_process_slices_are_disjoint_and_rebuild_the_global_batch(data):
  cfg = _config(augment=dict(enabled=False))
  ids = _identify(data, "train", cfg)
  steps = NUM_TRAIN // 8
  seen = []
  for p in range(2):
    batches = _take(_train(data, cfg, batch=8, process_index=p, process_count=2), steps)
    assert batches[0]["image"].shape[0] == 4
    seen.append({ids[row.tobytes()] for b in batches for row in b["image"]})
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(NUM_TRAIN))
  # With augmentation, process p's rows are rows [4 p, 4 p + 4) of the single-process global
  # batch: make_global puts them at those positions, so dropout masks (drawn by global position)
  # fall on the same examples as in one process.
  whole = _take(_train(data, batch=8, process_index=0, process_count=1), 2)
  for p in range(2):
    parts = _take(_train(data, batch=8, process_index=p, process_count=2), 2)
    for w, part in zip(whole, parts):
      for k in w:
        np.testing.assert_array_equal(w[k][4 * p:4 * p + 4], part[k])


def test_batch_size_must_divide_over_processes(data):
  with pytest.raises(ValueError, match="multiple of the process count 2"):
    _train(data, batch=7, process_index=0, process_count=2)


def test_augmentation_is_mild_and_off_when_disabled(data):
  plain = next(_train(data, _config(augment=dict(enabled=False))))
  aug = next(_train(data))
  np.testing.assert_array_equal(plain["input_ids"], aug["input_ids"])  # same order
  diff = np.abs(plain["image"] - aug["image"]).mean()
  assert 0.0 < diff < 1.0  # changed, but still the same picture (std units)


def test_eval_iterates_in_order_with_padding_and_valid_mask(data):
  sources, tokenizer = data
  cfg = _config()
  batches = list(_iterate(sources["test"], tokenizer, cfg, 6))
  assert len(batches) == 3
  for b in batches:
    assert b["image"].shape == (6, 64, 64, 1) and b["valid"].dtype == bool
  np.testing.assert_array_equal(batches[-1]["valid"], [True] * 4 + [False] * 2)
  assert all(b["valid"].all() for b in batches[:-1])
  meta = _metadata(sources["test"])
  labels = np.concatenate([b["labels"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(
      labels, chexpert.clinical_vector(meta["labels"], uncertain_as=1.0, normalize=False))
  again = list(_iterate(sources["test"], tokenizer, cfg, 6))
  np.testing.assert_array_equal(batches[1]["image"], again[1]["image"])


def test_eval_processes_read_contiguous_blocks_that_rebuild_the_split(data):
  sources, tokenizer = data
  cfg = _config()
  whole = list(_iterate(sources["test"], tokenizer, cfg, 6))
  images = np.concatenate([b["image"][b["valid"]] for b in whole])   # [16, 64, 64, 1], unique
  for count, batch_size in ((2, 6), (3, 6), (3, 3), (5, 10)):
    shares = [list(pipeline.iterate_split(
        cfg, source=sources["test"], tokenizer=tokenizer, spec=_spec(cfg),
        class_names=chexpert.CATEGORIES, batch_size=batch_size, process_index=p,
        process_count=count)) for p in range(count)]
    assert len({len(share) for share in shares}) == 1, (count, batch_size)  # the same calls
    rows = []
    for share in shares:
      assert all(b["image"].shape[0] == batch_size // count for b in share)
      valid = np.concatenate([b["valid"] for b in share])
      np.testing.assert_array_equal(valid, np.arange(len(valid)) < valid.sum())  # padding last
      rows.append(np.concatenate([b["image"][b["valid"]] for b in share]))
    assert max(map(len, rows)) == -(-NUM_TEST // count)  # nobody reads more than its block
    np.testing.assert_array_equal(np.concatenate(rows), images)
  with pytest.raises(errors.ConfigError, match="multiple of the process count 4"):
    pipeline.process_rows(16, 6, 0, 4)


def test_split_metadata_reads_text_fields_in_order(data):
  sources, _ = data
  meta = _metadata(sources["test"])
  assert len(meta["reports"]) == len(meta["study_ids"]) == NUM_TEST
  assert meta["labels"].shape == (NUM_TEST, 14) and meta["labels"].dtype == np.float32
  row = sources["test"][5]  # fully decoded by TFDS
  assert meta["study_ids"][5] == transforms.as_text(row["study_id"])
  assert meta["reports"][5] == transforms.as_text(row["report"])
  np.testing.assert_array_equal(meta["labels"][5], row["labels"])
  assert isinstance(pipeline.without_image_decoding(sources["test"])[0]["image"], bytes)


def test_negatives_and_graphs_in_train_batches(data):
  plain = _take(_train(data, seed=5), 2)
  rich = _take(_train(data, seed=5, negatives=True, graph=GRAPH_BUDGET), 2)
  base = {"image", "input_ids", "attention_mask", "labels"}
  assert set(rich[0]) == base | {"graph", "negative"}
  assert set(rich[0]["negative"]) == {"input_ids", "attention_mask", "labels", "graph"}
  assert set(rich[0]["graph"]) == set(rich[0]["negative"]["graph"]) == set(batch_lib.GRAPH_FIELDS)
  for a, b in zip(plain, rich):  # the extras leave the rest of the stream unchanged
    for k in base:
      np.testing.assert_array_equal(a[k], b[k])
  batch = rich[0]
  negative = batch["negative"]
  assert set(np.unique(negative["labels"])) <= {0.0, 1.0}
  assert not np.array_equal(negative["input_ids"], batch["input_ids"])
  np.testing.assert_array_equal(batch["graph"]["n_node"].sum(axis=1), [48] * 8)
  assert set(_take(_train(data, graph=GRAPH_BUDGET), 1)[0]) == base | {"graph"}
  # The batch spec describes exactly these fields, shapes and dtypes; its zeros match them too.
  spec = _spec(_config(), negatives=True, graph=GRAPH_BUDGET)
  spec.check(batch)
  spec.check(spec.zeros(8))
  bad = dict(batch, labels=batch["labels"][:, :13])
  with pytest.raises(ValueError, match=r"batch\['labels'\] is float32\[8, 13\], expected "
                                       r"float32\[8, 14\]"):
    spec.check(bad)


def test_eval_extras_match_the_stored_report_processing(data):
  sources, tokenizer = data
  cfg = _config()
  batches = list(_iterate(sources["test"], tokenizer, cfg, 8, negatives=True,
                          graph=GRAPH_BUDGET))
  text = transforms.TextTokenizer(tokenizer, cfg.max_text_length)
  node_tokenize = graphs.node_tokenizer(tokenizer)
  sizes = dataclasses.asdict(GRAPH_BUDGET)
  for r in (0, 5, 13):
    row = sources["test"][r]
    got = jax.tree.map(lambda v, r=r: v[r % 8], batches[r // 8])
    ids, mask = text(transforms.as_text(row["neg_report"]))
    np.testing.assert_array_equal(got["negative"]["input_ids"], ids)
    np.testing.assert_array_equal(got["negative"]["attention_mask"], mask)
    np.testing.assert_array_equal(got["negative"]["labels"], chexpert.clinical_vector(
        row["neg_labels"], uncertain_as=1.0, normalize=False))
    for field, arrays in (("graph", got["graph"]), ("neg_graph", got["negative"]["graph"])):
      want = graphs.graph_example(json.loads(transforms.as_text(row[field])), node_tokenize,
                                  **sizes)
      for k, v in want.items():
        np.testing.assert_array_equal(arrays[k], v, err_msg=f"row {r} {field} {k}")


def test_text_field_selects_the_training_text(data):
  sources, tokenizer = data
  cfg = _config(text_field="report_clean")
  batch = next(iter(_iterate(sources["test"], tokenizer, cfg, 4)))
  text = transforms.TextTokenizer(tokenizer, cfg.max_text_length)
  for r in range(4):
    ids, _ = text(transforms.as_text(sources["test"][r]["report_clean"]))
    np.testing.assert_array_equal(batch["input_ids"][r], ids)
  meta = _metadata(sources["test"], text_field="report_clean")
  assert meta["reports"][3] == transforms.as_text(sources["test"][3]["report_clean"])
  with pytest.raises(errors.ConfigError, match="config.data.text_field"):
    _train(data, _config(text_field="findings"))


def test_study_without_negative_gets_an_empty_one(data):
  sources, tokenizer = data
  rows = [dict(pipeline.without_image_decoding(sources["test"])[i]) for i in range(3)]
  rows[1]["neg_source"] = b"none"
  batch = next(iter(_iterate(rows, tokenizer, _config(), 3, negatives=True, graph=GRAPH_BUDGET)))
  negative = batch["negative"]
  np.testing.assert_array_equal(negative["attention_mask"].sum(axis=1) == 2,
                                [False, True, False])  # [CLS] [SEP] only
  assert not negative["labels"][1].any() and negative["labels"][0].any()
  np.testing.assert_array_equal(negative["graph"]["n_node"][1], [0, 48])
  del rows[0]["neg_report"]
  with pytest.raises(errors.DataError, match="neg_report"):
    list(_iterate(rows, tokenizer, _config(), 3, negatives=True))


def test_non_square_images_are_letterboxed_not_stretched(data):
  sources, tokenizer = data
  row = dict(pipeline.without_image_decoding(sources["test"])[0])
  image = np.full((40, 64), 200, np.uint8)  # a wide image: 64 x 40
  row["image"] = image
  cfg = _config(mean=0.0, std=1.0)
  out = next(iter(_iterate([row], tokenizer, cfg, 1)))["image"][0, ..., 0]  # [64, 64] in [0, 1]
  assert out.shape == (64, 64)
  np.testing.assert_allclose(out[20:44], 200 / 255, atol=1e-6)  # the image, centred
  assert out[:10].max() == 0.0 and out[-10:].max() == 0.0  # black bars above and below
  tall = next(iter(_iterate([dict(row, image=image.T.copy())], tokenizer, cfg, 1)))
  assert tall["image"][0, :, :10, 0].max() == 0.0  # bars left and right


class _Split(list):
  split = "validation"


@pytest.mark.parametrize("train", [True, False])
def test_corrupt_image_error_names_study_and_split(data, train):
  sources, tokenizer = data
  rows = [dict(sources["test"][i]) for i in range(4)]
  for row in rows:
    row["image"], row["study_id"] = b"\x89PNG truncated", b"s-broken"
  source = _Split(rows)
  with pytest.raises(transforms.ImageDecodeError, match=r"'s-broken' in split 'validation'"):
    if train:
      next(_train((dict(train=source), tokenizer), batch=2))
    else:
      list(_iterate(source, tokenizer, _config(), 2))


def test_iterator_state_round_trips_through_an_orbax_checkpoint(data, tmp_path):
  import jax
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  it = _train(data)
  _take(it, 3)
  state = dict(w=jnp.arange(4.0), step=jnp.int32(3))
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            data=pipeline.checkpoint_save_args(it)))
    expected = _take(it, 3)  # advancing after save() must not leak into the checkpoint
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    fresh = _train(data)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=pipeline.checkpoint_restore_args(fresh)))
  np.testing.assert_array_equal(restored["state"]["w"], state["w"])
  for want, got in zip(expected, _take(restored["data"], 3)):
    _assert_trees_equal(want, got)


def test_make_global_shards_the_batch_over_8_devices():
  out = run_with_devices("""
    import jax, numpy as np
    from jax.sharding import AxisType
    from input_pipeline import pipeline
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    batch = dict(image=np.arange(16 * 4 * 4 * 1, dtype=np.float32).reshape(16, 4, 4, 1),
                 negative=dict(input_ids=np.arange(16 * 5, dtype=np.int32).reshape(16, 5)),
                 valid=np.arange(16) < 13)
    out = pipeline.make_global(batch, mesh)
    flat = dict(image=batch["image"], input_ids=batch["negative"]["input_ids"],
                valid=batch["valid"])
    got = dict(image=out["image"], input_ids=out["negative"]["input_ids"], valid=out["valid"])
    for k, v in got.items():
      assert v.shape == flat[k].shape and v.dtype == flat[k].dtype, k
      assert v.sharding.spec == jax.sharding.PartitionSpec(("data",)), v.sharding
      assert len(v.addressable_shards) == 8
      assert all(s.data.shape[0] == 2 for s in v.addressable_shards)
      np.testing.assert_array_equal(np.asarray(v), flat[k])
    print("ok")
  """)
  assert out.strip().endswith("ok")


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_resume(data_dir):
  out = run_with_devices(f"""
    import ml_collections, numpy as np
    from absl import flags
    from input_pipeline import pipeline, synthcxr, tokenizer as tokenizer_lib
    from tests import test_pipeline as t

    source = synthcxr.data_source({data_dir!r}, "train", **t.SYNTH)
    tok = tokenizer_lib.load_tokenizer(synthcxr.tokenizer_dir({data_dir!r}, **t.SYNTH))
    make = lambda workers: t._train((dict(train=source), tok), t._config(worker_count=workers),
                                    negatives=True, graph=t.GRAPH_BUDGET)
    try:
      make(2)
      raise AssertionError("expected a clear error before flags are parsed")
    except RuntimeError as err:
      assert "mark_as_parsed" in str(err), err
    flags.FLAGS.mark_as_parsed()
    serial, parallel = make(0), make(2)
    want = [next(serial) for _ in range(4)]
    got = [next(parallel) for _ in range(2)]
    state = parallel.get_state()
    got += [next(parallel) for _ in range(2)]
    for a, b in zip(want, got):
      t._assert_trees_equal(a, b)
    resumed = make(2)
    resumed.set_state(state)
    t._assert_trees_equal(next(resumed), want[2])
    for it in (parallel, resumed):
      it.close()
    print("ok")
  """, num_devices=1)
  assert out.strip().endswith("ok")


def test_a_mixture_follows_its_weights_deterministically_and_resumes(data):
  """config.data.mixture: two sources interleaved 3:1, the same stream for the same seed, a
  different one for another seed, and the iterator state restores the position."""
  sources, tokenizer = data
  cfg = _config(augment=dict(enabled=False))
  test_images = {batch["image"][r].tobytes()
                 for batch in _iterate(sources["test"], tokenizer, cfg, 8)
                 for r in range(8)}

  def make(seed):
    return pipeline.create_train_iterator(
        cfg, source=None, tokenizer=tokenizer, spec=_spec(cfg), class_names=chexpert.CATEGORIES,
        global_batch_size=8, seed=seed,
        mixture=[(sources["train"], 3.0), (sources["test"], 1.0)])

  it = make(0)
  batches = _take(it, 25)
  from_test = [row.tobytes() in test_images for b in batches for row in b["image"]]
  assert sum(from_test) / len(from_test) == pytest.approx(0.25, abs=0.02)  # 200 examples
  for a, b in zip(batches, _take(make(0), 25)):
    _assert_trees_equal(a, b)
  assert not np.array_equal(batches[0]["input_ids"], next(make(1))["input_ids"])
  state = it.get_state()
  expected = _take(it, 2)
  resumed = make(0)
  resumed.set_state(state)
  for a, b in zip(expected, _take(resumed, 2)):
    _assert_trees_equal(a, b)
