"""SynthCXR: labels agree with the text and with the image; determinism; shapes; TFDS round trip."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest

from clipmed import errors
from clipmed.report import chexpert
from clipmed.report import processing as report_processing
from input_pipeline.synthcxr import findings as F
from input_pipeline.synthcxr import generate
from input_pipeline.synthcxr import processing
from input_pipeline.synthcxr import render
from input_pipeline.synthcxr import reports

# An independent, deliberately simple labeler (keywords + negation/uncertainty cues), written
# from the CheXpert conventions rather than from the generator's templates.
KEYWORDS = {
    "Enlarged Cardiomediastinum": [r"mediastin"],
    "Cardiomegaly": [r"cardiomegaly", r"heart size", r"cardiac silhouette"],
    "Lung Lesion": [r"\bnodules?\b", r"\bmass(es)?\b", r"\blesions?\b"],
    "Lung Opacity": [r"opacit", r"opacification"],
    "Edema": [r"\bedema\b"],
    "Consolidation": [r"consolidation"],
    "Pneumonia": [r"pneumonia"],
    "Atelectasis": [r"atelectasis"],
    "Pneumothorax": [r"pneumothora"],
    "Pleural Effusion": [r"effusion"],
    "Pleural Other": [r"pleural thickening"],
    "Fracture": [r"fracture"],
    "Support Devices": [r"endotracheal tube", r"enteric tube", r"nasogastric tube",
                        r"central venous catheter", r"pacemaker"],
}
PRE_NEGATION = [r"\bno\b", r"\bwithout\b", r"\bnormal\b", r"resolution of"]
POST_NEGATION = [r"\bis normal", r"\bare normal", r"within normal limits", r"has resolved"]
PRE_UNCERTAIN = [r"\bpossible\b", r"may represent", r"cannot exclude", r"concerning for",
                 r"questionable"]
POST_UNCERTAIN = [r"cannot be excluded"]


def _first(patterns, text):
  hits = [m.start() for p in patterns for m in re.finditer(p, text)]
  return min(hits) if hits else None


def _last(patterns, text):
  hits = [m.start() for p in patterns for m in re.finditer(p, text)]
  return max(hits) if hits else None


def simple_labeler(report: str) -> np.ndarray:
  labels = np.full(chexpert.NUM_CATEGORIES, np.nan, np.float32)
  rank = {1.0: 3, -1.0: 2, 0.0: 1}
  for sentence in re.split(r"(?<=\.)\s+", report.lower()):
    for cat, patterns in KEYWORDS.items():
      pos = _first(patterns, sentence)
      if pos is None:
        continue
      pre_neg = _first(PRE_NEGATION, sentence)
      post_neg = _last(POST_NEGATION, sentence)
      pre_unc = _first(PRE_UNCERTAIN, sentence)
      post_unc = _last(POST_UNCERTAIN, sentence)
      if (pre_neg is not None and pre_neg < pos) or (post_neg is not None and post_neg > pos):
        value = 0.0
      elif (pre_unc is not None and pre_unc < pos) or (post_unc is not None and post_unc > pos):
        value = -1.0
      else:
        value = 1.0
      i = chexpert.INDEX[cat]
      if np.isnan(labels[i]) or rank[value] > rank[float(labels[i])]:
        labels[i] = value
  return chexpert.apply_no_finding_rule(labels)


def _studies(n, seed=0):
  out = []
  for i in range(n):
    rng = generate.example_rng(seed, "train", i)
    study = F.sample_study(rng)
    out.append((study, reports.write_report(study, rng, ett_cm=4)))
  return out


@pytest.fixture(scope="module")
def renderer64():
  return render.Renderer(64)


@pytest.fixture(scope="module")
def renderer128():
  return render.Renderer(128)


def test_labels_agree_with_report_text():
  for study, report in _studies(400):
    expected = simple_labeler(report.text)
    assert np.array_equal(report.labels, expected, equal_nan=True), (
        f"{report.text}\n generator {report.labels}\n labeler   {expected}")


def test_no_finding_rule_and_sections():
  for _, report in _studies(200, seed=3):
    others = np.delete(report.labels, [chexpert.NO_FINDING, chexpert.SUPPORT_DEVICES])
    abnormal = np.any((others == 1) | (others == -1))
    assert (report.labels[chexpert.NO_FINDING] == 1.0) == (not abnormal)
    assert np.isnan(report.labels[chexpert.NO_FINDING]) == abnormal
    assert report.text == f"FINDINGS: {report.findings}\n\nIMPRESSION: {report.impression}"
    assert report.findings and report.impression
    assert report.labels.dtype == np.float32 and report.labels.shape == (14,)


def test_labels_agree_with_drawn_findings():
  for study, report in _studies(400, seed=1):
    drawn = study.categories()
    for f in study.findings:
      cat = F.KIND_CATEGORY[f.kind]
      value = report.labels[chexpert.INDEX[cat]]
      if f.certain:
        assert value == 1.0, (f, report.text)
      else:
        assert value in (1.0, -1.0), (f, report.text)
    for cat, i in chexpert.INDEX.items():
      value = report.labels[i]
      if cat == "No Finding" or np.isnan(value):
        continue
      if value == 0.0:
        assert cat not in drawn, (cat, report.text)
      else:
        # Pneumonia is drawn as an airspace opacity and may be written as one.
        extra = {"Lung Opacity", "Consolidation"} if study.has("pneumonia") else set()
        assert cat in drawn | extra, (cat, report.text)


def test_prevalence_matches_design():
  n = 3000
  labels = np.stack([r.labels for _, r in _studies(n, seed=2)])
  positive = (labels == 1) | (labels == -1)
  normal = np.mean(labels[:, chexpert.NO_FINDING] == 1)
  assert 0.52 <= normal <= 0.64, normal
  for cat in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Support Devices"):
    prevalence = positive[:, chexpert.INDEX[cat]].mean()
    assert 0.08 <= prevalence <= 0.2, (cat, prevalence)
  for cat in chexpert.CATEGORIES[1:]:
    assert positive[:, chexpert.INDEX[cat]].sum() > 20, cat  # every category is learnable
  texts = [r.text for _, r in _studies(500, seed=2)]
  top = max(texts.count(t) for t in set(texts))
  assert top > 50  # heavily duplicated normal reports, as in real archives


def test_determinism_and_order_independence(renderer64):
  a = generate.generate_example(renderer64, 0, "train", 7)
  for i in range(3):
    generate.generate_example(renderer64, 0, "train", i)
  b = generate.generate_example(renderer64, 0, "train", 7)
  assert np.array_equal(a["image"], b["image"]) and a["report"] == b["report"]
  assert np.array_equal(a["labels"], b["labels"], equal_nan=True)
  c = generate.generate_example(renderer64, 1, "train", 7)
  d = generate.generate_example(renderer64, 0, "validation", 7)
  assert not np.array_equal(a["image"], c["image"])
  assert not np.array_equal(a["image"], d["image"])
  assert a["study_id"] != c["study_id"] != d["study_id"]


@pytest.mark.parametrize("size", [64, 128, 224])
def test_shapes_and_dtypes(size):
  r = render.Renderer(size)
  ex = generate.generate_example(r, 0, "test", 3)
  assert ex["image"].shape == (size, size, 1) and ex["image"].dtype == np.uint8
  assert ex["labels"].shape == (14,) and ex["labels"].dtype == np.float32
  assert ex["view"] in ("PA", "AP")
  for key in ("report", "findings", "impression", "study_id"):
    assert isinstance(ex[key], str) and ex[key]
  assert 20 < ex["image"].mean() < 235 and ex["image"].std() > 20


def _pair(r, study_with, view="PA", k=0, upright=False):
  """Renders the same patient and noise without and with the study's findings."""
  anat = r.sample_anatomy(np.random.default_rng([k, 5]), view)
  if upright:
    anat = dataclasses.replace(anat, rot=0.0, du=0.0, dv=0.0, scale=1.0, noise=0.0,
                               grad_u=0.0, grad_v=0.0)
  base = F.Study(view)
  a, canvas = r.render(anat, base, np.random.default_rng([k, 6]), return_canvas=True)
  b = r.render(anat, study_with, np.random.default_rng([k, 6])).astype(np.float32)
  return anat, a.astype(np.float32), b, canvas.lung > 0.5


def _region(r, anat, x0, x1, v0, v1, side):
  """Boolean mask of an upright anatomy region (side 0 right = image left, 1 left)."""
  c = (np.arange(r.size) + 0.5) * 2 / r.size - 1
  vv, uu = np.meshgrid(c, c, indexing="ij")
  x = uu * (-1 if side == 0 else 1)
  return (x >= x0) & (x <= x1) & (vv >= v0) & (vv <= v1)


def _heart_ratio(r, anat, image):
  """Widest bright central run (heart) in the lower chest / thoracic width."""
  c = (np.arange(r.size) + 0.5) * 2 / r.size - 1
  best = 0.0
  low = min(anat.dome_top(0), anat.dome_top(1)) - 0.05  # above both domes
  for row in np.nonzero((c > low - 0.3) & (c < low))[0]:
    prof = image[row]
    mid = r.size // 2
    lung = min(prof[np.abs(c + 0.45) < 0.1].mean(), prof[np.abs(c - 0.45) < 0.1].mean())
    thr = 0.5 * (prof[mid] + lung)
    left = mid
    while left > 0 and prof[left - 1] > thr:
      left -= 1
    right = mid
    while right < r.size - 1 and prof[right + 1] > thr:
      right += 1
    best = max(best, (right - left + 1) * 2 / r.size)
  return best / (2 * anat.thorax_w)


@pytest.mark.parametrize("k", range(4))
def test_cardiomegaly_widens_heart(renderer128, k):
  study = F.Study("PA", (F.Finding("cardiomegaly", severity="mild"),))
  anat, normal, big, _ = _pair(renderer128, study, k=k, upright=True)
  ratio_normal, ratio_big = _heart_ratio(renderer128, anat, normal), _heart_ratio(
      renderer128, anat, big)
  assert ratio_normal < 0.5 < 0.53 < ratio_big, (ratio_normal, ratio_big)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("certain", [True, False])
def test_effusion_raises_basal_intensity_on_its_side(renderer128, side, certain):
  study = F.Study("PA", (F.Finding("effusion", side=side, severity="small", certain=certain),))
  for k in range(3):
    anat, a, b, lung = _pair(renderer128, study, k=k, upright=True)
    idx = 0 if side == "right" else 1
    cp = anat.cp_v[idx]
    box = dict(x0=anat.thorax_w - 0.25, x1=anat.thorax_w, v0=cp - 0.25, v1=cp)
    stated = _region(renderer128, anat, side=idx, **box) & lung  # costophrenic angle
    other = _region(renderer128, anat, side=1 - idx, **box) & lung
    assert (b - a)[stated].mean() > 20, (b - a)[stated].mean()
    assert abs((b - a)[other].mean()) < 1


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("severity", ["small", "large"])
def test_pneumothorax_darkens_apex_on_its_side(renderer128, side, severity):
  study = F.Study("PA", (F.Finding("pneumothorax", side=side, severity=severity),))
  for k in range(3):
    anat, a, b, _ = _pair(renderer128, study, k=k, upright=True)
    idx = 0 if side == "right" else 1
    apex = dict(x0=anat.apex_x - 0.12, x1=anat.apex_x + 0.12, v0=anat.apex_v,
                v1=anat.apex_v + 0.06)
    stated = _region(renderer128, anat, side=idx, **apex)
    other = _region(renderer128, anat, side=1 - idx, **apex)
    assert (b - a)[stated].mean() < -8, (b - a)[stated].mean()
    assert abs((b - a)[other].mean()) < 1
    if severity == "large":  # also the lateral periphery at mid height
      mid = anat.apex_v + 0.5 * (anat.cp_v[idx] - anat.apex_v)
      lateral = _region(renderer128, anat, anat.thorax_w - 0.12, anat.thorax_w - 0.02,
                        mid - 0.1, mid + 0.1, idx)
      assert (b - a)[lateral].mean() < -8


@pytest.mark.parametrize("device", F.DEVICES)
def test_devices_add_very_bright_pixels(renderer128, device):
  _, a, b, _ = _pair(renderer128, F.Study("AP", (), (device,)), view="AP")
  assert (a >= 250).sum() <= 3
  assert (b >= 250).sum() >= 15, (b >= 250).sum()


@pytest.mark.parametrize("kind,side,zone", [("consolidation", "right", "lower"),
                                            ("opacity", "left", "upper"),
                                            ("pneumonia", "left", "middle")])
def test_airspace_opacity_brightens_its_zone(renderer128, kind, side, zone):
  study = F.Study("PA", (F.Finding(kind, side=side, zone=zone, severity="moderate"),))
  anat, a, b, _ = _pair(renderer128, study, upright=True)
  idx = 0 if side == "right" else 1
  height = anat.cp_v[idx] - anat.apex_v
  v0 = {"upper": anat.apex_v + 0.1 * height, "middle": anat.apex_v + 0.35 * height,
        "lower": anat.apex_v + 0.6 * height}[zone]
  stated = _region(renderer128, anat, 0.3, 0.55, v0, v0 + 0.3 * height, idx)
  other = _region(renderer128, anat, 0.3, 0.55, v0, v0 + 0.3 * height, 1 - idx)
  assert (b - a)[stated].mean() > 8
  assert abs((b - a)[other].mean()) < 1


def test_every_finding_kind_changes_the_image(renderer64):
  for kind in F.KIND_CATEGORY:
    rng = np.random.default_rng(0)
    f = F.sample_finding(rng, kind)
    f = dataclasses.replace(f, certain=True)
    _, a, b, _ = _pair(renderer64, F.Study("PA", (f,)))
    assert np.abs(b - a).sum() > 200, kind


def test_generate_report_matches_example(renderer64):
  for split, index in (("train", 0), ("train", 11), ("test", 5)):
    ex = generate.generate_example(renderer64, 3, split, index)
    assert generate.generate_report(3, split, index) == ex["report"]


def _present(labels):
  """Finding categories (No Finding / Support Devices aside) positive or uncertain."""
  return {chexpert.CATEGORIES[i] for i in range(1, chexpert.NUM_CATEGORIES - 1)
          if labels[i] in (1.0, -1.0)}


@pytest.fixture(scope="module")
def processed_split():
  texts = [generate.generate_report(0, "validation", i) for i in range(80)]
  return texts, processing.process_split(texts, seed=0, split="validation")


def test_process_split_fields_and_determinism(processed_split):
  texts, records = processed_split
  assert len(records) == len(texts)
  for record in records:
    assert set(processing.STORED_FIELDS) <= set(record)
    assert record["neg_labels"].shape == (14,) and record["neg_labels"].dtype == np.float32
    for key in ("graph", "neg_graph"):
      graph = json.loads(record[key])
      assert set(graph) == {"nodes", "edges"} and graph["nodes"]
    assert record["neg_source"] in ("negated", "pool")  # every study has a hard negative
    assert record["neg_report"] and record["neg_report"] != record["report_clean"]
    assert record["neg_entity"] in chexpert.CATEGORIES
  again = processing.process_split(texts[:10], seed=0, split="validation")
  for a, b in zip(records[:10], again):
    if a["neg_source"] == "negated":  # pool picks depend on the whole split
      assert a["neg_report"] == b["neg_report"] and a["neg_entity"] == b["neg_entity"]
  assert processing.processing_seed(0, "train") != processing.processing_seed(0, "validation")
  assert processing.processing_seed(0, "train") != processing.processing_seed(1, "train")


def test_cached_processing_equals_process_reports(processed_split):
  texts, _ = processed_split
  texts = texts[:40] + texts[:10]  # normal reports repeat anyway; force some more repeats
  assert len(set(texts)) < len(texts)
  cached = processing.process_reports_cached(texts, seed=5)
  plain = report_processing.process_reports(texts, seed=5)
  for a, b in zip(cached, plain):
    assert set(a) == set(b)
    for key in a:
      if isinstance(a[key], np.ndarray):
        assert np.array_equal(a[key], b[key], equal_nan=True), key
      else:
        assert a[key] == b[key], key


def test_hard_negatives_differ_by_one_entity(processed_split):
  _, records = processed_split
  sources = [r["neg_source"] for r in records]
  assert sources.count("negated") >= 5 and sources.count("pool") >= 5
  for r in records:
    entity, before, after = r["neg_entity"], _present(r["labels"]), _present(r["neg_labels"])
    if r["neg_source"] == "negated":
      # r^n: the entity goes from positive to negative, nothing else changes (No Finding aside).
      k = chexpert.INDEX[entity]
      assert r["labels"][k] == 1.0 and r["neg_labels"][k] == 0.0, r
      rest = [i for i in range(14) if i not in (k, chexpert.NO_FINDING)]
      assert np.array_equal(r["labels"][rest], r["neg_labels"][rest], equal_nan=True), r
    else:
      # A report of the split with exactly one positive entity that the study does not have.
      assert after == {entity} and entity not in before, r
      if not before:  # a normal study: the two differ by exactly that entity
        assert before ^ after == {entity}


def test_fill_missing_negatives_picks_an_absent_entity():
  def record(labels, text):
    return {"labels": np.asarray(labels, np.float32), "report_clean": text, "graph": "{}",
            "neg_source": "none", "neg_report": "", "neg_entity": "",
            "neg_labels": np.full(14, np.nan, np.float32), "neg_graph": "{}"}

  nan = np.nan
  effusion = [nan] * 14
  effusion[chexpert.INDEX["Pleural Effusion"]] = 1.0
  edema = [nan] * 14
  edema[chexpert.INDEX["Edema"]] = 1.0
  possible_effusion = [nan] * 14
  possible_effusion[chexpert.INDEX["Pleural Effusion"]] = -1.0
  records = [record(possible_effusion, "Possible effusion."), record(effusion, "Effusion."),
             record(edema, "Edema.")]
  records[1]["neg_source"] = records[2]["neg_source"] = "negated"
  for seed in range(5):
    out = [dict(r) for r in records]
    assert report_processing.fill_missing_negatives(out, np.random.default_rng(seed)) == 1
    assert out[0]["neg_source"] == "pool" and out[0]["neg_report"] == "Edema."
    assert out[0]["neg_entity"] == "Edema"
  lonely = [record(possible_effusion, "Possible effusion.")]
  assert report_processing.fill_missing_negatives(lonely, np.random.default_rng(0)) == 0
  assert lonely[0]["neg_source"] == "none"


@pytest.mark.slow
def test_tfds_build_and_grain_read(tmp_path):
  import grain
  import tensorflow_datasets as tfds
  from input_pipeline import synthcxr
  from input_pipeline import tokenizer
  from input_pipeline.synthcxr import synth_cxr

  synth = dict(image_size=64, num_train=30, num_validation=6, num_test=6, seed=1)
  data_dir = str(tmp_path / "tfds")
  out = synthcxr.prepare(data_dir, vocab_size=200, **synth)
  assert os.path.isdir(os.path.join(out, "tokenizer"))
  source = synthcxr.data_source(data_dir, "train", **synth)
  assert len(source) == 30
  ds = grain.MapDataset.source(source)
  ex = ds[4]
  assert ex["study_id"].decode() == "synth1-train-000004"  # record i is example i
  ref = generate.generate_example(render.Renderer(64), 1, "train", 4)
  assert np.array_equal(ex["image"], ref["image"])
  assert ex["report"].decode() == ref["report"]
  assert np.array_equal(ex["labels"], ref["labels"], equal_nan=True)
  # Report processing of the whole split is stored next to the generated features.
  texts = [generate.generate_report(1, "train", i) for i in range(30)]
  records = processing.process_split(texts, seed=1, split="train")
  for key in processing.STORED_FIELDS:
    assert key in ex, key
  assert ex["neg_labels"].shape == (14,) and ex["neg_labels"].dtype == np.float32
  for i in (0, 4, 29):
    row = ds[i]
    for key in ("report_clean", "graph", "neg_report", "neg_graph", "neg_entity", "neg_source"):
      assert row[key].decode() == records[i][key], (i, key)
    assert np.array_equal(row["neg_labels"], records[i]["neg_labels"], equal_nan=True)
  # tfds.data_source with the builder config also reads it.
  config = synth_cxr.make_config(**synth)
  test_src = tfds.data_source("synth_cxr", split="test", data_dir=data_dir,
                              builder_kwargs=dict(config=config), download=False)
  assert len(test_src) == 6 and test_src[0]["image"].shape == (64, 64, 1)
  # Idempotent: a second call does not rebuild or retrain.
  stamp = os.path.getmtime(os.path.join(out, "tokenizer", "tokenizer.json"))
  assert synthcxr.prepare(data_dir, vocab_size=200, **synth) == out
  assert os.path.getmtime(os.path.join(out, "tokenizer", "tokenizer.json")) == stamp
  tok = tokenizer.load_tokenizer(synthcxr.tokenizer_dir(data_dir, **synth))
  ids = tok(ex["report"].decode())["input_ids"]
  assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_prepare_unwritable_dir_is_a_clear_error(tmp_path):
  from input_pipeline import synthcxr

  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(PermissionError, match="data_dir"):
    synthcxr.prepare(str(blocker / "tfds"), image_size=64, num_train=2, num_validation=1,
                     num_test=1)


def test_data_source_before_prepare_is_a_clear_error(tmp_path):
  from input_pipeline import synthcxr

  with pytest.raises(errors.DataError, match="prepare"):
    synthcxr.data_source(str(tmp_path), "train", image_size=64, num_train=2)
