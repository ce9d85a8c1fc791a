"""Rule labeler (clipmed.report.labeler): mentions, negation / uncertainty scopes, aggregation."""

import math
import time

import numpy as np
import pytest

from clipmed.report import chexpert
from clipmed.report import labeler

P, N, U = 1.0, 0.0, -1.0


def _check(text: str, expected: dict[str, float], absent: tuple[str, ...] = ()):
  labels = labeler.label_report(text)
  for name, value in expected.items():
    got = float(labels[chexpert.INDEX[name]])
    assert got == value, f"{name}: expected {value}, got {got} for {text!r}"
  for name in absent:
    assert math.isnan(labels[chexpert.INDEX[name]]), f"{name} should not be mentioned in {text!r}"


@pytest.mark.parametrize("text, expected", [
    # Plain mentions.
    ("Mild cardiomegaly.", {"Cardiomegaly": P}),
    ("The cardiac silhouette is moderately enlarged.", {"Cardiomegaly": P}),
    ("Small right pleural effusion.", {"Pleural Effusion": P}),
    ("Patchy left lower lobe airspace disease.", {"Lung Opacity": P}),
    ("Interstitial pulmonary edema.", {"Edema": P}),
    ("Right upper lobe pneumonia.", {"Pneumonia": P}),
    ("Large left hydropneumothorax.", {"Pneumothorax": P, "Pleural Effusion": P}),
    ("Old healed left rib fractures.", {"Fracture": P}),
    ("Left PICC with tip in the distal SVC.", {"Support Devices": P}),
    ("Right internal jugular catheter and endotracheal tube in standard position.",
     {"Support Devices": P}),
    ("A 1 cm nodule in the right upper lobe.", {"Lung Lesion": P}),
    ("Biapical pleural thickening.", {"Pleural Other": P}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": P}),
    ("Dense left lower lobe consolidation.", {"Consolidation": P}),
    ("Plate-like atelectasis at the left base.", {"Atelectasis": P}),
    # Pre-negation and its scope over a list.
    ("No pneumothorax, pleural effusion, or focal consolidation.",
     {"Pneumothorax": N, "Pleural Effusion": N, "Consolidation": N}),
    ("Lungs are clear without evidence of focal airspace disease or effusion.",
     {"Lung Opacity": N, "Pleural Effusion": N}),
    ("Negative for pneumothorax.", {"Pneumothorax": N}),
    ("The lungs are free of focal infiltrates.", {"Lung Opacity": N}),
    ("No focal consolidation, suspicious pulmonary opacity, or pneumothorax is identified.",
     {"Consolidation": N, "Lung Opacity": N, "Pneumothorax": N}),
    ("There is no focal opacity to suggest pneumonia.", {"Lung Opacity": N, "Pneumonia": N}),
    # Negation stops at a clause break.
    ("No pneumothorax, but there is a small left effusion.",
     {"Pneumothorax": N, "Pleural Effusion": P}),
    ("No pneumothorax with the chest tube in place.", {"Pneumothorax": N, "Support Devices": P}),
    ("Left basilar opacity without effusion may represent pneumonia.",
     {"Lung Opacity": P, "Pleural Effusion": N, "Pneumonia": U}),
    # Negation inside and after the mention.
    ("The heart is not enlarged.", {"Cardiomegaly": N}),
    ("Pneumothorax is not seen.", {"Pneumothorax": N}),
    ("The effusion has resolved.", {"Pleural Effusion": N}),
    ("The nasogastric tube has been removed.", {"Support Devices": N}),
    # Pseudo-negations assert the finding.
    ("No change in the moderate right pleural effusion.", {"Pleural Effusion": P}),
    ("No significant interval change in mild cardiomegaly.", {"Cardiomegaly": P}),
    # Uncertainty before, inside and after the mention.
    ("Possible small left pleural effusion.", {"Pleural Effusion": U}),
    ("Opacity at the right base may represent atelectasis.", {"Lung Opacity": P, "Atelectasis": U}),
    ("Findings are suspicious for pneumonia.", {"Pneumonia": U}),
    ("Borderline cardiomegaly.", {"Cardiomegaly": U}),
    ("Heart size is borderline.", {"Cardiomegaly": U}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": U}),
    ("Small effusion is not excluded.", {"Pleural Effusion": U}),
    ("Infection is suspected.", {"Pneumonia": U}),
    ("Cannot exclude a small pneumothorax.", {"Pneumothorax": U}),
    # Alternatives are uncertain.
    ("Bibasilar atelectasis or infiltrate.", {"Atelectasis": U, "Lung Opacity": U}),
    ("Left base scarring versus effusion.", {"Lung Opacity": U, "Pleural Effusion": U}),
    # Statements of normality are negative mentions.
    ("Heart size is normal.", {"Cardiomegaly": N}),
    ("Normal heart size.", {"Cardiomegaly": N}),
    ("The heart is top normal in size.", {"Cardiomegaly": N}),
    ("Heart size is at the upper limits of normal.", {"Cardiomegaly": N}),
    ("Pulmonary vascularity is within normal limits.", {"Edema": N}),
    ("The mediastinal contours are normal.", {"Enlarged Cardiomediastinum": N}),
    ("Heart size and pulmonary vascular engorgement appear within limits of normal.",
     {"Cardiomegaly": N, "Edema": N}),
    # Normal and enlarged offered as alternatives: uncertain, whichever comes first.
    ("Heart size is normal or slightly enlarged.", {"Cardiomegaly": U}),
    ("The heart is mildly enlarged or at the upper limits of normal.", {"Cardiomegaly": U}),
    ("The mediastinum is normal or minimally widened.", {"Enlarged Cardiomediastinum": U}),
    ("Heart size is normal. No effusion or pneumothorax.",
     {"Cardiomegaly": N, "Pleural Effusion": N, "Pneumothorax": N}),
])
def test_mention_status(text, expected):
  _check(text, expected)


# Lung Lesion follows CheXpert's mention list (nodule, mass, lump, cavitary lesion, carcinoma,
# neoplasm, tumor) and its synonyms; the sentences are written for this test, not taken from any
# dataset.
@pytest.mark.parametrize("text, expected", [
    ("Dense 8 mm right lower lobe nodule.", {"Lung Lesion": P}),
    ("A 2 cm nodule in the right upper lobe.", {"Lung Lesion": P}),
    ("Spiculated left hilar mass.", {"Lung Lesion": P}),
    ("Cavitary lesion in the right apex.", {"Lung Lesion": P}),
    ("Innumerable pulmonary metastases.", {"Lung Lesion": P}),
    ("Known bronchogenic carcinoma of the right upper lobe.", {"Lung Lesion": P}),
    ("Right upper lobe tumour.", {"Lung Lesion": P}),
    ("Rounded opacity may represent a neoplasm.", {"Lung Lesion": U, "Lung Opacity": P}),
    ("Possible pulmonary nodule.", {"Lung Lesion": U}),
    ("Possible small nodule in the left base.", {"Lung Lesion": U}),
    ("Questionable nodule projecting over the right hilum.", {"Lung Lesion": U}),
    ("A mass cannot be excluded.", {"Lung Lesion": U}),
    ("No suspicious nodules or masses.", {"Lung Lesion": N}),
    ("No suspicious pulmonary nodules.", {"Lung Lesion": N}),
    ("Non-calcified 8 mm nodule in the lingula.", {"Lung Lesion": P}),
    ("Noncalcified nodule in the right upper lobe.", {"Lung Lesion": P}),
    ("The right hilar nodule is not calcified.", {"Lung Lesion": P}),
    ("Calcified hilar lymph nodes and a 1 cm nodule in the left upper lobe.", {"Lung Lesion": P}),
    ("Multiple pulmonary nodules with calcification of the aorta.", {"Lung Lesion": P}),
    ("The bones are intact and there are multiple pulmonary metastases.", {"Lung Lesion": P}),
    # A nodule explained by two readings, one of them a lesion, stays a lesion.
    ("Left basilar nodule, possibly a nipple shadow or a true nodule.", {"Lung Lesion": P}),
    # Negation reaches a finding described by its history; CheXpert reads a bare "to exclude" as a
    # negation and "cannot exclude" as uncertain.
    ("Interval resolution of the previously seen nodule.", {"Lung Lesion": N}),
    ("Follow-up films are advised to exclude an underlying mass.", {"Lung Lesion": N}),
    ("An underlying mass cannot be excluded.", {"Lung Lesion": U}),
])
def test_lung_lesion_vocabulary(text, expected):
  _check(text, expected)


# "Nodular density / opacity / opacification" describes the shape of an opacity: Lung Opacity, not
# Lung Lesion (the reference codes them as round opacities; CheXpert's list differs here).
@pytest.mark.parametrize("text", [
    "A 9 mm nodular opacification at the left apex.",
    "Ill-defined nodular densities in both mid lungs.",
    "Small nodular opacity in the right upper lobe.",
])
def test_nodular_opacity_is_an_opacity(text):
  _check(text, {"Lung Opacity": P}, ("Lung Lesion",))


# A calcified nodule is not a lesion wherever its clause says so (CheXpert's unmention "calcified
# nodul"); neither is a granuloma, nor a nodule explained as something outside the lung, nor a
# mass, nodule or tumour of another organ.
@pytest.mark.parametrize("text", [
    "There is a calcified granuloma in the left lower lobe.",
    "Granuloma in the right upper lobe.",
    "Calcified 6 mm nodule in the right midlung.",
    "Densely calcified left apical nodule.",
    "Partially calcified nodule in the left lower lobe.",
    "The nodule at the right base appears calcified.",
    "Nodule in the left apex which is densely calcified.",
    "Left lower lobe nodule with central calcification.",
    "A 7 mm nodule in the left upper lobe. It is densely calcified.",
    "Right basilar nodule, most likely a nipple shadow.",
    "Right basilar nodule, probably a bone island.",
    "Nodule at the left hilum, probably a vessel seen end-on.",
    "Nodule over the left 5th rib likely represents a healing rib fracture.",
    "Palpable mass in the left breast.",
    "Thyroid nodule.",
    "Osseous metastases.",
    "Metastatic disease to the spine.",
    "Lytic rib lesions consistent with metastatic disease.",
    "Known metastatic breast cancer.",
])
def test_not_a_lung_lesion(text):
  _check(text, {}, ("Lung Lesion",))


# What counts as uncertain (CheXpert's patterns): hedges, "correlate clinically for", a hedged
# cause, "could be present", "difficult to exclude"; a hedge on an adjective ("is likely chronic")
# leaves the finding positive. Enlargement put down to technique is only apparent.
@pytest.mark.parametrize("text, expected", [
    ("Correlate clinically for an early pneumonia.", {"Pneumonia": U}),
    ("Please correlate clinically for symptoms of infection.", {"Pneumonia": U}),
    ("Patchy right basilar opacity, compatible with pneumonia given the fever.",
     {"Lung Opacity": P, "Pneumonia": U}),
    ("Left basilar opacity, likely due to developing pneumonia.",
     {"Lung Opacity": P, "Pneumonia": U}),
    ("Pneumonia is likely.", {"Pneumonia": U}),
    ("No focal consolidation consistent with pneumonia.", {"Consolidation": N, "Pneumonia": N}),
    ("Subtle consolidation could be present at the left base.", {"Consolidation": U}),
    ("Possible early consolidation in the right base.", {"Consolidation": U}),
    ("Consolidation versus atelectasis at the left base.", {"Consolidation": U, "Atelectasis": U}),
    ("Mediastinal widening, likely due to AP technique.", {"Enlarged Cardiomediastinum": U}),
    ("The superior mediastinum appears wide, related to patient rotation.",
     {"Enlarged Cardiomediastinum": U}),
    ("Possible mediastinal widening.", {"Enlarged Cardiomediastinum": U}),
    ("The mediastinum is widened.", {"Enlarged Cardiomediastinum": P}),
    ("Cardiomegaly accentuated by low lung volumes.", {"Cardiomegaly": U}),
    ("Cardiomegaly and bibasilar atelectasis due to low lung volumes.",
     {"Cardiomegaly": P, "Atelectasis": P}),
    ("Possible pleural thickening at the right apex.", {"Pleural Other": U}),
    ("Blunting of the left costophrenic angle, likely due to pleural thickening.",
     {"Pleural Other": U}),
    ("Pleural thickening versus a small effusion on the left.",
     {"Pleural Other": U, "Pleural Effusion": U}),
    ("Right apical pleural thickening is likely chronic.", {"Pleural Other": P}),
    ("Small effusion is likely present.", {"Pleural Effusion": U}),
    ("Infiltrates and edema are difficult to entirely exclude.",
     {"Lung Opacity": U, "Edema": U}),
])
def test_hedging(text, expected):
  _check(text, expected)


@pytest.mark.parametrize("text, expected, absent", [
    # A thickened fissure is pleural thickening (the fissures are visceral pleura).
    ("Thickening of the minor fissure.", {"Pleural Other": P}, ()),
    ("Mild fissural thickening on the right.", {"Pleural Other": P}, ()),
    # A cause in between: the large thing is the hernia, not the mediastinum.
    ("Retrocardiac lucency over the mediastinum, due to a large hiatus hernia.", {},
     ("Enlarged Cardiomediastinum",)),
    # "Interstitial prominence" is not among CheXpert's Lung Opacity phrases.
    ("Slight interstitial prominence in both lower zones.", {}, ("Lung Opacity",)),
])
def test_pleural_other_mediastinum_interstitium(text, expected, absent):
  _check(text, expected, absent)


@pytest.mark.parametrize("text, absent", [
    ("Scattered calcified nodules from prior granulomatous disease.", ("Lung Lesion",)),
    ("Calcified granuloma in the left lower lobe.", ("Lung Lesion",)),
    ("Old granulomatous disease.", ("Lung Lesion",)),
    ("The cavity in the right apex is smaller.", ("Lung Lesion",)),
    ("There is no mass effect on the trachea.", ("Lung Lesion",)),
    ("Soft tissue mass of the neck.", ("Lung Lesion",)),
    ("Diffuse reticulonodular pattern.", ("Lung Lesion",)),
    ("Several radiopaque densities over the left chest wall.", ("Lung Opacity",)),
    ("Small pericardial effusion.", ("Pleural Effusion",)),
    ("Compression collapse of the T8 vertebral body.", ("Atelectasis",)),
    ("Soft tissue edema of the chest wall.", ("Edema",)),
    ("Bilateral breast implants.", ("Support Devices",)),
    ("The chest tube tip lies outside the thoracic cavity.", ("Lung Lesion",)),
    ("Lung volumes remain low.", ("Lung Opacity",)),
    ("Mild degenerative changes of the thoracic spine.", tuple(chexpert.CATEGORIES[1:])),
    ("Granulomatous infection in the past.", ("Pneumonia",)),
    ("Curvilinear density projecting over the heart.", ("Lung Opacity",)),
])
def test_context_exclusions(text, absent):
  _check(text, {}, absent)


# A nodule its clause (or the next sentence, pointing back) names a calcified granuloma is a
# calcified nodule: out of Lung Lesion (CheXpert's unmention "calcified nodul"); its Lung Opacity
# mention stays, as in CheXpert. Naming a different finding, or an uncalcified granuloma, does not.
@pytest.mark.parametrize("text, expected, absent", [
    ("A 5 mm nodule at the right base, probably a calcified granuloma.", {}, ("Lung Lesion",)),
    ("Nodular density over the left apex, XXXX an old calcified granuloma.",
     {"Lung Opacity": P}, ("Lung Lesion",)),
    ("Tiny nodules in both upper lobes are consistent with calcified healed granulomas.", {},
     ("Lung Lesion",)),
    ("Two small nodules in the lingula. These are likely calcified granulomas.", {},
     ("Lung Lesion",)),
    ("Right upper lobe nodule. It most likely represents a calcified granuloma.", {},
     ("Lung Lesion",)),
    ("New 12 mm nodule in the right upper lobe and a calcified granuloma at the left base.",
     {"Lung Lesion": P}, ()),
    ("Right upper lobe nodule, possibly a granuloma.", {"Lung Lesion": P}, ()),
    ("Left lower lobe nodule. A calcified granuloma is again seen in the right apex.",
     {"Lung Lesion": P}, ()),
])
def test_nodule_named_calcified_granuloma(text, expected, absent):
  _check(text, expected, absent)


# A density placed outside the lungs is not a Lung Opacity.
@pytest.mark.parametrize("text, expected, absent", [
    ("Faint 4 mm density on the lateral view, probably within the pyriform sinus.", {},
     ("Lung Opacity",)),
    ("Rounded density seen in the region of the upper abdomen.", {}, ("Lung Opacity",)),
    ("Patchy density in the right lower lobe.", {"Lung Opacity": P}, ()),
])
def test_extrapulmonary_density(text, expected, absent):
  _check(text, expected, absent)


# Pleural scarring is not a Lung Opacity (CheXpert's unmention "pleural scar"), also when a clause
# says what a pleural finding is; scarring in another clause, or next to it, still is.
@pytest.mark.parametrize("text, expected, absent", [
    ("Right apical pleural thickening, probably old scarring.", {"Pleural Other": P},
     ("Lung Opacity",)),
    ("The pleural thickening along the left lateral chest wall is likely scarring.",
     {"Pleural Other": P}, ("Lung Opacity",)),
    ("Pleural thickening at the right apex and there is scarring in the left base.",
     {"Pleural Other": P, "Lung Opacity": P}, ()),
    ("Pleural thickening with adjacent parenchymal scarring in the lingula.",
     {"Pleural Other": P, "Lung Opacity": P}, ()),
])
def test_pleural_scarring(text, expected, absent):
  _check(text, expected, absent)


# Combined reports: the sections of other examinations ("Left hip.", "2. Lumbar spine.") are not
# read; a chest heading resumes reading.
def test_combined_report_reads_only_the_chest_examination():
  report = ("Chest. Heart size is normal. The lungs are clear. Right hip. A total hip "
            "arthroplasty is in place. There is an old fracture of the greater trochanter. "
            "CHEST. No pleural effusion.")
  _check(report, {"No Finding": P, "Pleural Effusion": N}, ("Support Devices", "Fracture"))
  _check("1. Chest. Healing left rib fracture. 2. Lumbar spine. Compression fracture of L2.",
         {"Fracture": P})
  _check("1. Chest. No acute disease. 2. Lumbar spine. Compression fracture of L2.",
         {"No Finding": P}, ("Fracture",))
  # A sentence that merely names the chest is not a heading that hides anything.
  _check("Normal chest. Small left effusion.", {"Pleural Effusion": P})


def test_aggregation_positive_beats_uncertain_beats_negative():
  _check("No effusion on the right. Possible small left effusion.", {"Pleural Effusion": U})
  _check("Possible effusion. Small left effusion.", {"Pleural Effusion": P})
  _check("No effusion. Left effusion.", {"Pleural Effusion": P})


def test_no_finding_rule():
  _check("Heart size is normal. No pneumothorax. Lungs are clear.", {"No Finding": P})
  # Support devices alone keep No Finding.
  _check("Right PICC in good position. No pneumothorax.", {"No Finding": P, "Support Devices": P})
  # Uncertain findings clear it, as positive ones do.
  labels = labeler.label_report("Possible left basilar atelectasis.")
  assert math.isnan(labels[chexpert.NO_FINDING])
  labels = labeler.label_report("Small right pleural effusion.")
  assert math.isnan(labels[chexpert.NO_FINDING])


def test_sections_are_respected():
  report = ("INDICATION: Rule out pneumonia.\nFINDINGS: Lungs are clear.\n"
            "IMPRESSION: No acute disease.")
  labels = labeler.label_report(report)
  assert math.isnan(labels[chexpert.INDEX["Pneumonia"]])
  assert labels[chexpert.NO_FINDING] == P


def test_label_reports_shape_dtype_and_empty_report():
  labels = labeler.label_reports(["Mild cardiomegaly.", "", "No effusion."])
  assert labels.shape == (3, 14) and labels.dtype == np.float32
  assert labels[0, chexpert.INDEX["Cardiomegaly"]] == P
  assert np.isnan(labels[1]).all()
  calls = []
  labeler.label_reports(["x"] * 5, progress=lambda done, total: calls.append((done, total)))
  assert calls == [(5, 5)]


def test_sentence_mentions_offsets():
  sentence = "Small left pleural effusion, no pneumothorax."
  found = labeler.sentence_mentions(sentence)
  texts = {chexpert.CATEGORIES[m.category]: sentence[m.start:m.end] for m in found}
  assert texts == {"Pleural Effusion": "effusion", "Pneumothorax": "pneumothorax"}


_SPEED_REPORTS = [
    "FINDINGS: The heart size is normal. The mediastinal contours are within normal limits. "
    "There is no focal consolidation, pleural effusion, or pneumothorax. Mild degenerative "
    "changes of the thoracic spine. IMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Moderate cardiomegaly. Small bilateral pleural effusions with adjacent "
    "atelectasis. Interstitial opacities may represent mild pulmonary edema. Right internal "
    "jugular catheter tip in the SVC. IMPRESSION: 1. Cardiomegaly with mild edema. 2. Small "
    "effusions.",
]


@pytest.mark.slow
def test_labeler_speed_regression_guard():
  # scripts/measure_report_quality.py reports the real figure; this guards against a large
  # regression with a margin for a busy shared machine.
  texts = _SPEED_REPORTS * 250
  start = time.process_time()  # CPU time: other processes on the machine do not count
  labeler.label_reports(texts)
  rate = len(texts) / max(time.process_time() - start, 1e-9)
  assert rate > 400, f"labeler runs at {rate:.0f} reports/s"
