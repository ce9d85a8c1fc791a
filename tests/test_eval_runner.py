"""The evaluation runner with fake embedding callables and a tiny split."""

import json
import math
import zlib

import ml_collections
import numpy as np
import pytest

from clipmed import errors
from clipmed.evaluators import EVALUATORS, EvalSource, Runner
from clipmed.evaluators import results as results_lib
from clipmed.evaluators.base import Metric
from clipmed.report import chexpert
from input_pipeline import pipeline

N, D = 7, 8


def _text_vector(text):
  """Deterministic text embedding from the text's characters."""
  rng = np.random.default_rng([ord(c) for c in text])
  return rng.normal(size=D).astype(np.float32)


class FakeModel:
  """Counts calls; image embedding = the image's pixels (images are [B, 1, 1, D])."""

  def __init__(self):
    self.text_calls = []
    self.image_calls = 0

  def embed_images(self, images):
    self.image_calls += 1
    return images.reshape(images.shape[0], -1)

  def embed_texts(self, texts):
    self.text_calls.append(list(texts))
    return np.stack([_text_vector(t) for t in texts])


def _metadata():
  rng = np.random.default_rng(0)
  labels = np.where(rng.random((N, 14)) < 0.4, 1.0, 0.0).astype(np.float32)
  labels[:, chexpert.INDEX["Cardiomegaly"]] = [1, 0, 1, 0, 1, 0, -1]
  reports = ["report a", "report b", "report a", "report c", "report d", "report e", "report f"]
  return dict(reports=reports, labels=labels, study_ids=[f"s{i}" for i in range(N)],
              extras={"note": [None] * N})


def _iterate(split, batch_size=3):
  del split
  images = np.random.default_rng(1).normal(size=(N, 1, 1, D)).astype(np.float32)
  for start in range(0, N, batch_size):
    batch = images[start:start + batch_size]
    valid = np.ones(batch_size, bool)
    if len(batch) < batch_size:  # pad the last batch like the pipeline does
      valid[len(batch):] = False
      batch = np.concatenate([batch, np.zeros((batch_size - len(batch), 1, 1, D), np.float32)])
    yield {"image": batch, "valid": valid}


def _evals(every_steps=0):
  return ml_collections.ConfigDict(dict(
      zero_shot=dict(task="zero_shot", dataset="", split="test", every_steps=every_steps,
                     prompts="chexpert", classes=["Cardiomegaly", "Edema"], where={},
                     num_bootstrap=20, calibrate=False),  # reads only the test split
      retrieval=dict(task="retrieval", dataset="", split="test", every_steps=0, ks=(1, 5),
                     num_bootstrap=20),
  ))


def _runner(evals=None, metadata=_metadata):
  return Runner(evals or _evals(), default_dataset="toy", seed=0,
                sources=lambda name: EvalSource(iterate_split=_iterate,
                                                split_metadata=lambda split: metadata()))


def test_run_keys_and_embedding_once():
  model = FakeModel()
  results = _runner().run(10, embed_images=model.embed_images, embed_texts=model.embed_texts,
                          logit_scale=20.0)
  assert "zero_shot/toy/auroc/cardiomegaly" in results
  assert "zero_shot/toy/mean_auroc" in results
  assert "retrieval/toy/recall@1" in results and "retrieval/toy/chance@5" in results
  assert all(isinstance(m, Metric) for m in results.values())
  # One pass over the split (3 batches) shared by both tasks.
  assert model.image_calls == 3
  # Every distinct text embedded exactly once: 6 distinct reports plus the prompts.
  embedded = [t for call in model.text_calls for t in call]
  assert len(embedded) == len(set(embedded))
  assert embedded.count("report a") == 1


def test_run_is_deterministic():
  a = _runner().run(1, embed_images=FakeModel().embed_images,
                    embed_texts=FakeModel().embed_texts, logit_scale=10.0)
  b = _runner().run(1, embed_images=FakeModel().embed_images,
                    embed_texts=FakeModel().embed_texts, logit_scale=10.0)
  assert a.keys() == b.keys()
  for key in a:
    assert a[key] == b[key] or (math.isnan(a[key].value) and math.isnan(b[key].value))


def test_only_due_runs_periodic_evaluations():
  runner = _runner(_evals(every_steps=5))
  assert runner.due(10) == ["zero_shot"] and runner.due(7) == []
  model = FakeModel()
  results = runner.run(10, embed_images=model.embed_images, embed_texts=model.embed_texts,
                       logit_scale=10.0, only_due=True)
  assert results and all(k.startswith("zero_shot/") for k in results)
  assert runner.run(7, embed_images=model.embed_images, embed_texts=model.embed_texts,
                    logit_scale=10.0, only_due=True) == {}


def _share(process_index, process_count=2, batch_size=4):
  """A split as process `process_index` of `process_count` iterates it (pipeline.process_rows)."""
  images = np.random.default_rng(1).normal(size=(N, 1, 1, D)).astype(np.float32)
  rows, valid = pipeline.process_rows(N, batch_size, process_index, process_count)
  per_batch = batch_size // process_count
  for start in range(0, len(rows), per_batch):
    yield {"image": images[rows[start:start + per_batch]],
           "valid": valid[start:start + per_batch]}


def test_a_split_shared_by_two_processes_gives_the_results_of_one():
  """Process 0 of two embeds only its block; gather_rows (here: process 1's rows appended, as
  pipeline.gather_rows would) restores the split, so the results are those of one process."""
  whole = _runner().run(10, embed_images=FakeModel().embed_images,
                        embed_texts=FakeModel().embed_texts, logit_scale=20.0)
  other = list(_share(1))
  other_rows = {"emb": np.concatenate([b["image"].reshape(-1, D) for b in other]),
                "valid": np.concatenate([b["valid"] for b in other])}
  gathered = []

  def gather_rows(local):
    gathered.append(local.shape)
    return np.concatenate([local, other_rows["valid" if local.dtype == bool else "emb"]])

  rows_seen = []

  def embed_images(images):
    rows_seen.append(images.shape[0])
    return images.reshape(images.shape[0], -1)

  runner = Runner(_evals(), default_dataset="toy", seed=0,
                  sources=lambda name: EvalSource(iterate_split=lambda split: _share(0),
                                                  split_metadata=lambda split: _metadata(),
                                                  gather_rows=gather_rows))
  shared = runner.run(10, embed_images=embed_images, embed_texts=FakeModel().embed_texts,
                      logit_scale=20.0)
  assert sum(rows_seen) == 4 and gathered == [(4, D), (4,)]  # its block of ceil(7 / 2) rows
  assert shared.keys() == whole.keys()
  for key in whole:
    assert shared[key] == whole[key] or (math.isnan(shared[key].value)
                                         and math.isnan(whole[key].value)), key


def test_write_json_md_and_scalars(tmp_path):
  results = {"zero_shot/toy/auroc/edema": Metric(0.75, 0.6, 0.9),
             "zero_shot/toy/auroc/fracture": Metric(float("nan"), float("nan"), float("nan")),
             "retrieval/toy/chance@10": Metric(0.01, 0.01, 0.01)}
  results["normal_detection/toy/accuracy"] = Metric(0.0, 0.0, 0.0)  # degenerate, not constant
  evaluated = {"toy/test": {"images": 7, "image_id_sha256": "ab" * 32}}
  json_path, md_path = results_lib.write(str(tmp_path / "eval"), results, step=42,
                                         data=evaluated)
  with open(json_path) as f:
    data = json.load(f)
  assert data == {
      "zero_shot/toy/auroc/edema": {"value": 0.75, "ci_low": 0.6, "ci_high": 0.9},
      "zero_shot/toy/auroc/fracture": {"value": None, "ci_low": None, "ci_high": None},
      "retrieval/toy/chance@10": {"value": 0.01, "ci_low": 0.01, "ci_high": 0.01},
      "normal_detection/toy/accuracy": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0},
      "_data": evaluated,
  }
  metrics, read_data = results_lib.read(json_path)
  assert read_data == evaluated and metrics["zero_shot/toy/auroc/edema"] == Metric(0.75, 0.6, 0.9)
  assert math.isnan(metrics["zero_shot/toy/auroc/fracture"].value)
  md = open(md_path).read()
  assert "| toy/test | 7 | `abababababababab (image_ids)` |" in md
  assert "step 42" in md
  assert "## zero_shot (toy)" in md and "## retrieval (toy)" in md
  assert "| auroc/edema | 0.750 | [0.600, 0.900] |" in md
  assert "| auroc/fracture | n/a | n/a |" in md
  assert "| chance@10 | 0.010 | - |" in md
  assert "| accuracy | 0.000 | [0.000, 0.000] |" in md
  scalars = Runner.scalars(results)
  assert scalars["zero_shot/toy/auroc/edema"] == 0.75 and len(scalars) == 4


def test_errors_are_actionable():
  with pytest.raises(errors.ConfigError, match="not a known evaluation"):
    _runner(ml_collections.ConfigDict(dict(foo=dict(task="nope", every_steps=0))))
  with pytest.raises(errors.ConfigError, match="lacks `dataset`"):
    _runner(ml_collections.ConfigDict(dict(foo=dict(task="retrieval", every_steps=0,
                                                    split="test", ks=(1,), num_bootstrap=5))))

  def short_metadata():
    meta = _metadata()
    meta["reports"] = meta["reports"][:5]
    meta["study_ids"] = meta["study_ids"][:5]
    meta["labels"] = meta["labels"][:5]
    meta["extras"] = {}
    return meta

  model = FakeModel()
  with pytest.raises(ValueError, match="yielded 7 valid images but split_metadata has 5"):
    _runner(metadata=short_metadata).run(1, embed_images=model.embed_images,
                                         embed_texts=model.embed_texts, logit_scale=1.0)

  def bad_extras():
    meta = _metadata()
    meta["extras"] = {"note": [None] * 3}
    return meta

  with pytest.raises(ValueError, match=r"extras\['note'\] has 3 entries for 7 studies"):
    _runner(metadata=bad_extras).run(1, embed_images=model.embed_images,
                                     embed_texts=model.embed_texts, logit_scale=1.0)


def test_registry_is_an_explicit_dict():
  assert isinstance(EVALUATORS, dict)
  assert EVALUATORS["zero_shot"].task == "zero_shot"


def _full_suite(num_bootstrap, classes=("Cardiomegaly", "Edema", "Pleural Effusion")):
  classes = list(classes)
  return ml_collections.ConfigDict(dict(
      zero_shot=dict(task="zero_shot", dataset="", split="test", every_steps=0,
                     prompts="chexpert", classes=classes, where={}, num_bootstrap=num_bootstrap),
      linear_probe=dict(task="linear_probe", dataset="", split="test", train_split="train",
                        every_steps=0,
                        classes=classes, fractions=(0.01, 0.1, 1.0), weight_decay=1e-3,
                        max_iterations=100, num_bootstrap=num_bootstrap),
      retrieval=dict(task="retrieval", dataset="", split="test", every_steps=0, ks=(1, 5, 10),
                     num_bootstrap=num_bootstrap),
      cxr_align=dict(task="cxr_align", dataset="", split="test", every_steps=0,
                     num_bootstrap=num_bootstrap),
      adversarial=dict(task="adversarial", dataset="", split="test", every_steps=0,
                       prompts="chexpert",
                       classes=classes, num_bootstrap=num_bootstrap),
      normal_detection=dict(task="normal_detection", dataset="", split="test",
                            every_steps=0, num_abnormal=2999, num_bootstrap=num_bootstrap),
      zero_shot_multiclass=dict(task="zero_shot_multiclass", dataset="", split="test",
                                every_steps=0, prompts="chexpert", classes=classes,
                                num_bootstrap=num_bootstrap),
  ))


class FakeDataset:
  """Random studies per split; abnormal studies carry CXR-Align texts in the extras."""

  def __init__(self, sizes, dim, batch_size=64):
    self.sizes, self.dim, self.batch_size = sizes, dim, batch_size

  def metadata(self, split):
    n = self.sizes[split]
    rng = np.random.default_rng(len(split))
    labels = rng.choice([1.0, 0.0, -1.0, np.nan], size=(n, 14),
                        p=[0.08, 0.1, 0.02, 0.8]).astype(np.float32)
    labels = chexpert.apply_no_finding_rule(labels)
    abnormal = np.isnan(labels[:, chexpert.NO_FINDING])
    reports = [f"{split} report {i % (n // 2 + 1)}" if a else f"normal {i % 3}"
               for i, a in enumerate(abnormal)]
    extras = {"cxr_align_report": [f"clean {r}" if a else None
                                   for r, a in zip(reports, abnormal)],
              "cxr_align_negated": [f"negated {r}" if a else None
                                    for r, a in zip(reports, abnormal)],
              "cxr_align_omitted": [f"omitted {r}" if a else None
                                    for r, a in zip(reports, abnormal)]}
    return dict(reports=reports, labels=labels, study_ids=[f"{split}{i}" for i in range(n)],
                extras=extras)

  def iterate(self, split):
    n, b = self.sizes[split], self.batch_size
    images = np.random.default_rng(len(split) + 7).normal(size=(n, 1, 1, self.dim))
    for start in range(0, n, b):
      batch = images[start:start + b].astype(np.float32)
      valid = np.ones(b, bool)
      valid[len(batch):] = False
      batch = np.concatenate([batch, np.zeros((b - len(batch), 1, 1, self.dim), np.float32)])
      yield {"image": batch, "valid": valid}

  def embed_texts(self, texts):
    # A cheap deterministic embedding: hash each text into a seed.
    return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim)
                     for t in texts])


def _run_suite(sizes, dim, num_bootstrap, embedded=None):
  data = FakeDataset(sizes, dim)
  runner = Runner(_full_suite(num_bootstrap), default_dataset="synth_cxr", seed=0,
                  sources=lambda name: EvalSource(iterate_split=data.iterate,
                                                  split_metadata=data.metadata))

  def embed_texts(texts):
    if embedded is not None:
      embedded.extend(texts)
    return data.embed_texts(texts)

  return runner.run(100, embed_images=lambda x: x.reshape(x.shape[0], -1),
                    embed_texts=embed_texts, logit_scale=14.0)


def test_full_suite_keys():
  embedded = []
  results = _run_suite({"train": 120, "test": 60}, 8, num_bootstrap=20, embedded=embedded)
  # Only the linear probe reads the training split, and it never needs its reports.
  assert not any(t.startswith("train report") for t in embedded)
  assert any(t.startswith("test report") for t in embedded)
  prefixes = {key.split("/")[0] for key in results}
  assert prefixes == set(EVALUATORS)
  for key in ("zero_shot/synth_cxr/mean_auroc", "linear_probe/synth_cxr/1pct/mean_auroc",
              "linear_probe/synth_cxr/100pct/auroc/cardiomegaly", "retrieval/synth_cxr/chance@10",
              "cxr_align/synth_cxr/task_a", "cxr_align/synth_cxr/task_b",
              "adversarial/synth_cxr/accuracy", "normal_detection/synth_cxr/accuracy",
              "normal_detection/synth_cxr/chance", "zero_shot_multiclass/synth_cxr/accuracy"):
    assert key in results, key


def test_evaluations_on_several_datasets_and_an_unavailable_one(capsys):
  """Each evaluation reads its own dataset (with its own classes); a dataset that cannot be
  opened is skipped with one line, the others run; results.json names the evaluated splits."""
  evals = _evals()
  evals.pneumonia = dict(task="zero_shot", dataset="rsna_pneumonia", split="test",
                         every_steps=0, prompts="rsna_pneumonia", classes=["Pneumonia"],
                         where={"Normal": 0.0}, num_bootstrap=20, calibrate=False)
  evals.missing = dict(task="retrieval", dataset="not_prepared", split="test", every_steps=0,
                       ks=(1,), num_bootstrap=20)
  rsna_labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 0],
                          [1, 0, 0]], np.float32)

  def sources(name):
    if name == "not_prepared":
      raise errors.DataError("dataset 'not_prepared' is not prepared; run: python -m ...")
    if name == "rsna_pneumonia":
      return EvalSource(
          iterate_split=_iterate, has_reports=False,
          class_names=("Pneumonia", "Normal", "No Lung Opacity / Not Normal"),
          split_metadata=lambda split: dict(reports=[""] * N, labels=rsna_labels,
                                            study_ids=[f"p{i}" for i in range(N)]),
          split_info=lambda split: {"images": N, "image_id_sha256": "cd" * 32})
    return EvalSource(iterate_split=_iterate, split_metadata=lambda split: _metadata())

  runner = Runner(evals, default_dataset="toy", seed=0, sources=sources)
  assert "skipping the evaluations on not_prepared" in capsys.readouterr().err
  assert set(runner.skipped) == {"missing"}
  model = FakeModel()
  results = runner.run(3, embed_images=model.embed_images, embed_texts=model.embed_texts,
                       logit_scale=10.0)
  assert "pneumonia/rsna_pneumonia/auroc/pneumonia" in results
  assert not any(key.startswith("missing/") for key in results)
  assert set(runner._data_info) == {"toy/test", "rsna_pneumonia/test"}
  assert runner._data_info["rsna_pneumonia/test"]["image_id_sha256"] == "cd" * 32
  evals.retrieval.dataset = "rsna_pneumonia"  # no reports: a config mistake, said at once
  with pytest.raises(errors.ConfigError, match="needs report texts"):
    Runner(evals, default_dataset="toy", seed=0, sources=sources)
  evals.retrieval.dataset = ""
  evals.zero_shot.dataset = "rsna_pneumonia"  # CheXpert classes on RSNA
  with pytest.raises(errors.ConfigError, match="rsna_pneumonia has no class"):
    Runner(evals, default_dataset="toy", seed=0, sources=sources).run(
        3, embed_images=model.embed_images, embed_texts=model.embed_texts, logit_scale=10.0)
