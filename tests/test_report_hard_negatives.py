"""Hard negatives, CXR-Align triplets and per-study processing (clipmed.report)."""

import json
import math

import numpy as np
import pytest

from clipmed.report import chexpert
from clipmed.report import hard_negatives
from clipmed.report import labeler
from clipmed.report import processing

ABNORMAL = [
    "FINDINGS: Moderate cardiomegaly. Small left pleural effusion. No pneumothorax. "
    "IMPRESSION: Cardiomegaly and small left effusion.",
    "FINDINGS: Compared to the prior study, there is new right lower lobe consolidation. "
    "Heart size is normal. No pleural effusion. IMPRESSION: Right lower lobe pneumonia.",
    "Left basilar opacity, which may represent atelectasis or pneumonia. No focal opacity in "
    "the right lung to suggest edema. Old healed right rib fractures.",
    "FINDINGS: Stable mild cardiomegaly with pulmonary vascular congestion. Right internal "
    "jugular catheter tip in the SVC. IMPRESSION: Mild cardiomegaly and vascular congestion.",
]
NORMAL = "FINDINGS: The heart size is normal. Lungs are clear. No effusion. IMPRESSION: Normal."


def _same(a, b):
  return a == b or (math.isnan(a) and math.isnan(b))


def test_negative_statements_name_only_their_category():
  statements = hard_negatives.load_statements(hard_negatives.STATEMENTS_PATH)
  assert set(statements) == set(chexpert.CATEGORIES[1:])
  for name, phrases in statements.items():
    assert len(phrases) >= 3, name
    for phrase in phrases:
      labels = labeler.label_text(phrase)
      assert labels[chexpert.INDEX[name]] == 0.0, phrase
      others = [chexpert.CATEGORIES[k] for k in range(1, 14)
                if k != chexpert.INDEX[name] and not math.isnan(labels[k])]
      assert not others, f"{phrase!r} also mentions {others}"


def test_load_statements_errors(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"Cardiomegaly": []}))
  with pytest.raises(ValueError, match="non-empty list"):
    hard_negatives.load_statements(str(bad))
  bad.write_text(json.dumps({"Cardiomegally": ["No cardiomegaly."]}))
  with pytest.raises(ValueError, match="unknown CheXpert category"):
    hard_negatives.load_statements(str(bad))


@pytest.mark.parametrize("report", ABNORMAL)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_negative_differs_by_one_entity(report, seed):
  hn = hard_negatives.make_hard_negative(report, np.random.default_rng(seed))
  assert hn is not None
  entity = chexpert.INDEX[hn.entity]
  assert entity not in hard_negatives.EXCLUDED_ENTITIES
  assert hn.labels[entity] == 1.0
  ref = labeler.label_text(hn.report)
  neg = labeler.label_text(hn.negated)
  omi = labeler.label_text(hn.omitted)
  assert neg[entity] == 0.0 and math.isnan(omi[entity])
  for k in range(chexpert.NUM_CATEGORIES):
    if k not in (entity, chexpert.NO_FINDING):
      assert _same(ref[k], neg[k]) and _same(ref[k], omi[k]), chexpert.CATEGORIES[k]
  assert hn.position in hard_negatives.POSITIONS
  assert "prior" not in hn.report.lower() and "stable" not in hn.report.lower()


def test_hard_negative_positions_and_seeding():
  report = ("Moderate cardiomegaly. No pneumothorax. Lungs are clear. Degenerative changes "
            "of the spine.")
  positions = set()
  for seed in range(30):
    hn = hard_negatives.make_hard_negative(report, np.random.default_rng(seed))
    positions.add(hn.position)
    sentences = hn.negated.split(". ")
    index = {"beginning": 0, "middle": 1, "end": 3}[hn.position]
    assert labeler.label_text(sentences[index])[chexpert.INDEX["Cardiomegaly"]] == 0.0
  assert positions == set(hard_negatives.POSITIONS)
  a = hard_negatives.make_hard_negative(report, np.random.default_rng(5))
  b = hard_negatives.make_hard_negative(report, np.random.default_rng(5))
  assert a.negated == b.negated


def test_removed_sentence_keeps_other_negative_findings():
  # The opacity sentence is the only one ruling out pneumonia: the negation is restated.
  report = "Patchy right basilar opacity. There is no focal opacity to suggest pneumonia."
  hn = hard_negatives.make_hard_negative(report, np.random.default_rng(0))
  assert hn.entity == "Lung Opacity"
  assert labeler.label_text(hn.omitted)[chexpert.INDEX["Pneumonia"]] == 0.0


def test_normal_report_has_no_negated_version():
  assert hard_negatives.make_hard_negative(NORMAL, np.random.default_rng(0)) is None
  assert hard_negatives.make_hard_negative("", np.random.default_rng(0)) is None


def test_pool_negatives():
  nan = np.nan
  rows = np.full((5, 14), nan, np.float32)
  rows[0, 0] = 1.0                       # normal
  rows[1, 2] = 1.0                       # one entity: pool
  rows[2, [2, 10]] = 1.0                 # two entities
  rows[3, 4], rows[3, 8] = 1.0, -1.0     # one positive, one uncertain: not pool
  rows[4, [0, 13]] = 1.0                 # normal with a device
  picks = hard_negatives.pool_negatives(rows, np.random.default_rng(0))
  assert picks.tolist() == [1, -1, -1, -1, 1]
  assert hard_negatives.single_entity_mask(rows).tolist() == [False, True, False, False, False]
  empty_pool = hard_negatives.pool_negatives(rows[[0, 2]], np.random.default_rng(0))
  assert empty_pool.tolist() == [-1, -1]


def test_cxr_align_triplets_skips_normal_reports_and_is_order_independent():
  texts = [NORMAL] + ABNORMAL
  triplets = hard_negatives.cxr_align_triplets(texts, seed=3)
  assert [t["source_row"] for t in triplets] == [2, 3, 4, 5]
  again = hard_negatives.cxr_align_triplets(texts[::-1], seed=3)
  by_text = {t["report"]: t["negated"] for t in again}
  assert all(by_text[t["report"]] != "" for t in triplets)
  for t in triplets:
    assert set(t) == {"source_row", "chosen_entity", "report", "negated", "omitted"}


def test_process_reports_fields():
  texts = [NORMAL, "Small right pleural effusion. Heart size is normal.", ABNORMAL[0]]
  records = processing.process_reports(texts, seed=0)
  assert len(records) == 3
  for record in records:
    assert set(record) == set(processing.FIELDS)
    for name, (dtype, shape, _) in processing.FIELDS.items():
      value = record[name]
      if dtype == "str":
        assert isinstance(value, str)
      else:
        assert value.dtype == np.dtype(dtype) and value.shape == shape
    graph = json.loads(record["graph"])
    assert set(graph) == {"nodes", "edges"}
  assert records[0]["neg_source"] == "pool"
  assert records[0]["neg_report"] == records[1]["report_clean"]
  assert records[0]["neg_entity"] == "Pleural Effusion"
  assert records[1]["neg_source"] == "negated"
  assert records[2]["neg_source"] == "negated"
  assert records[2]["neg_labels"][chexpert.INDEX[records[2]["neg_entity"]]] == 0.0


def test_report_about_one_entity_gets_no_empty_omitted_report():
  # Every sentence is about the mass: omitting it would leave nothing, so no triplet.
  report = "Large right upper lobe mass. The mass abuts the minor fissure."
  assert hard_negatives.make_hard_negative(report, np.random.default_rng(0)) is None
  # With another finding either entity can go, and r^r keeps the other one's sentence.
  entities = set()
  for seed in range(8):
    hn = hard_negatives.make_hard_negative(report + " Small left pleural effusion.",
                                           np.random.default_rng(seed))
    assert hn is not None and hn.omitted.strip() and hn.negated != hn.report
    entities.add(hn.entity)
  assert entities == {"Lung Lesion", "Pleural Effusion"}


def test_entity_sharing_a_sentence_is_trimmed_not_dropped():
  # Opacity and atelectasis share the hedge; dropping the sentence would lose the uncertain
  # atelectasis, so only the opacity's words go ("Possible atelectasis.").
  report = ("Patchy left basilar opacity. Possible scarring or atelectasis. Heart size is normal. "
            "No pleural effusion.")
  hn = hard_negatives.make_hard_negative(report, np.random.default_rng(0))
  assert hn is not None and hn.entity == "Lung Opacity"
  assert "Possible atelectasis." in hn.omitted and "scarring" not in hn.omitted.lower()
  omitted = labeler.label_text(hn.omitted)
  assert math.isnan(omitted[chexpert.INDEX["Lung Opacity"]])
  assert omitted[chexpert.INDEX["Atelectasis"]] == -1.0


def test_cli_builders_and_triplets_share_the_rule():
  # The CXR-Align triplets and the builders' per-study processing both call make_hard_negative:
  # the same cleaned report and seed give the same r^n.
  text = ABNORMAL[0]
  triplet = hard_negatives.cxr_align_triplets([text], seed=4)[0]
  direct = hard_negatives.make_hard_negative(text, np.random.default_rng([4, 0]))
  assert (triplet["negated"], triplet["omitted"]) == (direct.negated, direct.omitted)
  record = processing.process_report(text, rng=np.random.default_rng([4, 0]))
  assert record["neg_report"] == direct.negated and record["neg_entity"] == direct.entity
