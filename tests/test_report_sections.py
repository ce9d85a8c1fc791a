"""Sections, sentences, compound splitting and temporal clean-up (clipmed.report)."""

import pytest

from clipmed.report import clean
from clipmed.report import compound
from clipmed.report import sections
from clipmed.report import sentences
from clipmed.report import temporal

MIMIC_STYLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  Cough, evaluate for pneumonia.

 COMPARISON:  Radiograph from two days earlier.

 FINDINGS:
 
 The heart is mildly enlarged.  There is a small left
 pleural effusion.  No pneumothorax.

 IMPRESSION:
 
 1. Small left pleural effusion.
 2. Mild cardiomegaly.
"""


def test_mimic_sections():
  parts = sections.split_sections(MIMIC_STYLE)
  assert "pneumonia" in parts["indication"]
  assert parts["findings"].startswith("The heart is mildly enlarged")
  assert "Mild cardiomegaly" in parts["impression"]
  text = sections.clinical_text(MIMIC_STYLE)
  assert "pneumonia" not in text and "two days" not in text
  assert text.index("heart") < text.index("Mild cardiomegaly")


def test_openi_style_fields_and_headerless_text():
  text = "Comparison: None. Indication: Chest pain. Findings: Lungs are clear. Impression: Normal."
  assert sections.clinical_text(text) == "Lungs are clear.\n\nNormal."
  assert sections.clinical_text("No acute process.") == "No acute process."
  joined = sections.join_fields("Heart normal.", "No disease.")
  assert sections.split_sections(joined) == {"findings": "Heart normal.",
                                             "impression": "No disease."}
  assert sections.join_fields("", "Only impression.") == "IMPRESSION: Only impression."


@pytest.mark.parametrize("text, expected", [
    ("1. Left basilar opacity. 2. No pneumothorax.", ["Left basilar opacity.", "No pneumothorax."]),
    ("A nodule measures 3.5 cm. The heart is normal.",
     ["A nodule measures 3.5 cm.", "The heart is normal."]),
    ("A 2.1 cm. nodule in the right apex. Dr. Smith was paged at 10 a.m. today.",
     ["A 2.1 cm. nodule in the right apex.", "Dr. Smith was paged at 10 a.m. today."]),
    ("Lungs are clear bilaterally.There is no effusion.",
     ["Lungs are clear bilaterally.", "There is no effusion."]),
    ("No acute osseous abnormality..", ["No acute osseous abnormality."]),
    ("Heart size is\nnormal. Lungs\nare clear.", ["Heart size is normal.", "Lungs are clear."]),
    ("IMPRESSION text\n\n- Small effusion\n- Mild edema", ["IMPRESSION text", "Small effusion",
                                                          "Mild edema"]),
    ("1. Streaky opacity, XXXX atelectasis 2. No effusion.",
     ["Streaky opacity, XXXX atelectasis", "No effusion."]),
    ("Opacity e.g. in the base. Vs. the lung", ["Opacity e.g. in the base.", "Vs. the lung"]),
])
def test_split_sentences(text, expected):
  assert sentences.split_sentences(text) == expected


@pytest.mark.parametrize("sentence, expected", [
    ("No pneumothorax, effusion, or consolidation.",
     ["No pneumothorax", "No effusion", "No consolidation"]),
    ("There is no pneumothorax or pleural effusion.",
     ["There is no pneumothorax", "No pleural effusion"]),
    ("Lungs are clear without focal consolidation, effusion, or pneumothorax.",
     ["Lungs are clear", "No focal consolidation", "No effusion", "No pneumothorax"]),
    ("Cardiomegaly and mild interstitial pulmonary edema.",
     ["Cardiomegaly", "Mild interstitial pulmonary edema"]),
    ("Mild cardiomegaly with small bilateral pleural effusions.",
     ["Mild cardiomegaly", "Small bilateral pleural effusions"]),
    ("Emphysema, however no acute cardiopulmonary finding.",
     ["Emphysema", "No acute cardiopulmonary finding"]),
    ("Heart size is normal and the lungs are clear.",
     ["Heart size is normal", "The lungs are clear"]),
    ("Opacity may represent atelectasis or pneumonia.",
     ["Opacity", "Possible atelectasis or pneumonia"]),
    ("Left basilar opacity, which may represent atelectasis or pneumonia.",
     ["Left basilar opacity", "Possible atelectasis or pneumonia"]),
    ("Right basilar airspace disease, atelectasis versus infiltrate.",
     ["Right basilar airspace disease", "Possible atelectasis versus infiltrate"]),
])
def test_split_compound(sentence, expected):
  assert compound.split_compound(sentence) == expected


@pytest.mark.parametrize("sentence", [
    "Atelectasis or pneumonia in the left base.",  # alternatives stay together
    "Possible small effusion and atelectasis.",  # hedged list
    "Moderate left and small right pleural effusions.",  # one category
])
def test_split_compound_keeps_statements_that_cannot_be_split(sentence):
  assert compound.split_compound(sentence) == [sentence]


@pytest.mark.parametrize("sentence, expected", [
    ("Stable mild cardiomegaly.", "Mild cardiomegaly."),
    ("Compared to the prior study, there is a small left effusion.",
     "There is a small left effusion."),
    ("Compared to the prior study there is new left lower lobe opacity.",
     "There is left lower lobe opacity."),
    ("No significant interval change.", None),
    ("Stable appearance of the chest.", None),
    ("Similar appearance to the previous radiograph.", None),
    ("Comparison: XXXX, XXXX", None),
    ("There is apical pleural thickening, unchanged from prior.",
     "There is apical pleural thickening."),
    ("Mild cardiomegaly unchanged.", "Mild cardiomegaly."),
    ("Cardiomegaly is stable.", "Cardiomegaly."),
    ("Heart size is stable.", None),
    ("The calcified granulomas are again noted.", "Calcified granulomas."),
    ("The left pleural effusion has resolved.", "No left pleural effusion."),
    ("Interval resolution of the right basilar opacity.", "No right basilar opacity."),
    ("Interval removal of the nasogastric tube.", "No nasogastric tube."),
    ("The pneumothorax is no longer seen.", "No pneumothorax."),
    ("New right lower lobe consolidation.", "Right lower lobe consolidation."),
    ("Interval development of a small right effusion.", "A small right effusion."),
    ("Slightly increased bibasilar atelectasis since the prior exam.",
     "Bibasilar atelectasis."),
    ("Persistent but decreased left lower lobe opacity.", "Left lower lobe opacity."),
    ("There is no change in the right apical scarring.", "There is right apical scarring."),
    ("The mass has increased in size compared to the prior study.", "Mass."),
    ("The heart size is normal and unchanged compared to the prior examination.",
     "The heart size is normal."),
    ("Increased interstitial markings.", "Increased interstitial markings."),
    ("Increased heart size.", "Increased heart size."),
    ("Decreased lung volumes.", "Low lung volumes."),
    ("The right lung remains clear.", "The right lung is clear."),
    ("Stable position of the right internal jugular catheter.",
     "Right internal jugular catheter."),
    ("Evidence of prior granulomatous disease.", "Evidence of prior granulomatous disease."),
])
def test_remove_temporal(sentence, expected):
  assert temporal.remove_temporal(sentence) == expected


def test_clean_report_one_finding_per_sentence_without_prior_references():
  report = ("FINDINGS: Compared to the prior study, stable mild cardiomegaly. No pneumothorax, "
            "effusion, or consolidation. PA and lateral views of the chest were obtained. "
            "IMPRESSION: 1. Mild cardiomegaly, unchanged. 2. No interval change. "
            "Recommend follow-up in 3 months.")
  assert clean.clean_sentences(report) == [
      "Mild cardiomegaly.", "No pneumothorax.", "No effusion.", "No consolidation."]
  assert clean.clean_report(report).startswith("Mild cardiomegaly. No pneumothorax.")
