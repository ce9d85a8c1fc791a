"""Report text and CheXpert labels of a SynthCXR `Study`.

Every sentence is built together with the labels it asserts, so the labels are exactly what the
text says: a positive mention -> 1.0, an explicit negation ("No pneumothorax.", "Heart size is
normal.", "... has resolved.") -> 0.0, uncertain wording ("possible", "may represent", "cannot
exclude", "concerning for", "questionable") -> -1.0, never mentioned -> NaN. Mentions of one
category are merged the CheXpert way (positive over uncertain over negative) and No Finding follows
`clipmed.report.chexpert.apply_no_finding_rule`.

Wording rules the templates keep (tests rely on them): a negation cue precedes the words it negates
("No X or Y", "without X") or follows them ("X is normal", "X has resolved"); an uncertainty cue
precedes ("possible X", "X which may represent Y") or follows ("X cannot be excluded") them; a
sentence never mixes polarities except "<positive> which may represent / concerning for
<uncertain>".
"""

import dataclasses

import numpy as np

from clipmed.report import chexpert
from input_pipeline.synthcxr import findings as findings_lib

Finding = findings_lib.Finding
Study = findings_lib.Study
Labels = dict[str, float]

_ORDINALS = {3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth",
             9: "ninth"}
_LOBES = {
    ("right", "upper"): ("right upper lobe", "the right upper lobe"),
    ("right", "middle"): ("right middle lobe", "the right middle lobe"),
    ("right", "lower"): ("right lower lobe", "the right lung base"),
    ("left", "upper"): ("left upper lobe", "the left upper lobe"),
    ("left", "middle"): ("lingular", "the lingula"),
    ("left", "lower"): ("left lower lobe", "the left lung base"),
    ("bilateral", "upper"): ("bilateral upper lobe", "both upper lobes"),
    ("bilateral", "middle"): ("bilateral mid lung", "both mid lungs"),
    ("bilateral", "lower"): ("bibasilar", "both lung bases"),
}
# Heavily duplicated normal reports, as in real archives: ((sentence, labels), ...), impression.
_FIXED_NORMALS = (
    ((("The lungs are clear.", {}),
      ("The cardiomediastinal silhouette is within normal limits.",
       {"Enlarged Cardiomediastinum": 0.0}),
      ("No pleural effusion or pneumothorax.", {"Pleural Effusion": 0.0, "Pneumothorax": 0.0})),
     "No acute cardiopulmonary process."),
    ((("Heart size is normal.", {"Cardiomegaly": 0.0}),
      ("The lungs are clear without focal consolidation, pleural effusion or pneumothorax.",
       {"Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0})),
     "No acute cardiopulmonary abnormality."),
    ((("The heart size and mediastinal contours are normal.",
       {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}),
      ("The lungs are clear.", {}),
      ("No pneumothorax or pleural effusion.", {"Pleural Effusion": 0.0, "Pneumothorax": 0.0})),
     "No acute cardiopulmonary process."),
)
_NORMAL_IMPRESSIONS = ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                       "No acute intrathoracic process.", "Normal chest radiograph.")


@dataclasses.dataclass(frozen=True)
class Sentence:
  """One report sentence and the labels it asserts ({CheXpert category: value})."""

  text: str
  labels: Labels


@dataclasses.dataclass(frozen=True)
class Report:
  """Report sections, their sentences and the merged labels.

  Attributes:
    findings: FINDINGS section text (no header).
    impression: IMPRESSION section text (no header).
    text: "FINDINGS: ...\\n\\nIMPRESSION: ..." (the full report).
    sentences: every sentence of both sections, with its labels.
    labels: float32 [14] in the CheXpert labeler convention (NaN = not mentioned).
  """

  findings: str
  impression: str
  text: str
  sentences: tuple[Sentence, ...]
  labels: np.ndarray


def _pick(rng: np.random.Generator, options, p=None):
  return options[int(rng.choice(len(options), p=p))]


def _cap(text: str) -> str:
  return text[0].upper() + text[1:]


def _loc(f: Finding) -> tuple[str, str]:
  """(adjective, noun phrase) for a lobe/zone, e.g. ("right lower lobe", "the right lung base")."""
  return _LOBES[(f.side, f.zone or "lower")]


def _noun_phrase(f: Finding, rng: np.random.Generator) -> tuple[str, bool]:
  """A noun phrase naming the finding with its category keyword; returns (phrase, plural)."""
  sev, side = f.severity, f.side
  if f.kind == "effusion":
    if side == "bilateral":
      return f"{sev} bilateral pleural effusions", True
    return f"{sev} {side} pleural effusion", False
  if f.kind == "pneumothorax":
    if sev == "small":
      return f"small {side} apical pneumothorax", False
    return _pick(rng, (f"{sev} {side} pneumothorax",
                       f"{sev} {side} pneumothorax with a visible pleural line")), False
  if f.kind == "cardiomegaly":
    return _pick(rng, (f"{sev} cardiomegaly",
                       f"{sev} enlargement of the cardiac silhouette")), False
  if f.kind == "mediastinum":
    return _pick(rng, (f"{sev} widening of the mediastinum", f"{sev} mediastinal widening")), False
  if f.kind in ("nodule", "mass"):
    adj, noun = _loc(f)
    if rng.random() < 0.5:
      return f"{f.size_cm:.1f} cm {f.kind} in {noun}", False
    return f"{adj} {f.kind}", False
  if f.kind == "opacity":
    adj, noun = _loc(f)
    if side == "bilateral":
      return f"{adj} opacities", True
    return _pick(rng, (f"patchy opacity in {noun}", f"{adj} opacity", f"hazy {adj} opacity")), False
  if f.kind in ("consolidation", "pneumonia"):
    adj, noun = _loc(f)
    return _pick(rng, (f"{f.kind} in {noun}", f"{adj} {f.kind}")), False
  if f.kind == "atelectasis":
    if side == "bilateral":
      return _pick(rng, ("bibasilar atelectasis", "mild bibasilar atelectasis")), False
    return _pick(rng, (f"{side} basilar atelectasis",
                       f"plate-like atelectasis at the {side} lung base")), False
  if f.kind == "edema":
    return _pick(rng, (f"{sev} pulmonary edema", f"{sev} interstitial pulmonary edema")), False
  if f.kind == "pleural_thickening":
    return f"{side} {f.zone} pleural thickening", False
  if f.kind == "fracture":
    nth = _ORDINALS[f.rib]
    if sev == "healing":
      return f"healing fracture of the {side} {nth} rib", False
    return _pick(rng, (f"acute fracture of the {side} {nth} rib",
                       f"displaced {side} {nth} rib fracture")), False
  raise ValueError(f"unknown finding kind {f.kind!r}")


def _finding_sentence(f: Finding, rng: np.random.Generator) -> Sentence:
  """The FINDINGS-section sentence of a finding."""
  cat = findings_lib.KIND_CATEGORY[f.kind]
  if f.kind == "pneumonia":
    return _pneumonia_sentence(f, rng, impression=False)
  phrase, plural = _noun_phrase(f, rng)
  be = "are" if plural else "is"
  if not f.certain:
    options = [f"possible {phrase}.", f"cannot exclude {phrase}.", f"questionable {phrase}."]
    if len(phrase.split()) <= 5:  # a trailing cue is only read reliably after a short phrase
      options.append(f"{phrase} cannot be excluded.")
    if f.kind == "effusion" and f.side != "bilateral":
      options.append(f"blunting of the {f.side} costophrenic angle may represent a small "
                     "pleural effusion.")
    return Sentence(_cap(_pick(rng, options)), {cat: chexpert.UNCERTAIN})
  options = {
      "": [f"{phrase}.", f"{phrase} {be} noted.", f"{phrase} {be} seen."],
      "new": [f"new {phrase}.", f"{phrase}, new since the prior study."],
      "unchanged": [f"{phrase}, unchanged from prior.", f"unchanged {phrase}.", f"stable {phrase}.",
                    f"{phrase} {be} unchanged compared to the prior study."],
      "increased": [f"interval increase in {phrase}.",
                    f"{phrase}, increased since the prior study."],
      "decreased": [f"interval decrease in {phrase}.",
                    f"{phrase}, decreased since the prior study."],
  }[f.temporal]
  return Sentence(_cap(_pick(rng, options)), {cat: chexpert.POSITIVE})


def _pneumonia_sentence(f: Finding, rng: np.random.Generator, impression: bool) -> Sentence:
  """Pneumonia is mostly reported as an opacity or consolidation that may represent it."""
  adj, noun = _loc(f)
  if f.certain:
    if impression:
      return Sentence(_cap(f"{adj} pneumonia."), {"Pneumonia": chexpert.POSITIVE})
    if rng.random() < 0.5:
      return Sentence(_cap(f"{adj} consolidation consistent with pneumonia."),
                      {"Consolidation": chexpert.POSITIVE, "Pneumonia": chexpert.POSITIVE})
    return Sentence(_cap(f"findings consistent with {adj} pneumonia."),
                    {"Pneumonia": chexpert.POSITIVE})
  if impression:
    return Sentence(_pick(rng, ("Findings concerning for pneumonia.", "Possible pneumonia.")),
                    {"Pneumonia": chexpert.UNCERTAIN})
  choice = int(rng.integers(3))
  if choice == 0:
    return Sentence(_cap(f"{adj} opacity which may represent pneumonia."),
                    {"Lung Opacity": chexpert.POSITIVE, "Pneumonia": chexpert.UNCERTAIN})
  if choice == 1:
    return Sentence(_cap(f"consolidation in {noun}, concerning for pneumonia."),
                    {"Consolidation": chexpert.POSITIVE, "Pneumonia": chexpert.UNCERTAIN})
  return Sentence(_cap(f"possible {adj} pneumonia."), {"Pneumonia": chexpert.UNCERTAIN})


def _impression_sentence(f: Finding, rng: np.random.Generator) -> Sentence:
  cat = findings_lib.KIND_CATEGORY[f.kind]
  if f.kind == "pneumonia":
    return _pneumonia_sentence(f, rng, impression=True)
  phrase, _ = _noun_phrase(f, rng)
  if not f.certain:
    return Sentence(_cap(_pick(rng, (f"possible {phrase}.", f"cannot exclude {phrase}."))),
                    {cat: chexpert.UNCERTAIN})
  prefix = {"": "", "new": "new ", "unchanged": "unchanged ", "increased": "interval increase in ",
            "decreased": "interval decrease in "}[f.temporal]
  return Sentence(_cap(f"{prefix}{phrase}."), {cat: chexpert.POSITIVE})


_DEVICE_SENTENCES = {
    "ett": ("Endotracheal tube terminates {cm} cm above the carina.",
            "Endotracheal tube tip is {cm} cm above the carina."),
    "ngt": ("Enteric tube courses below the diaphragm with the tip in the stomach.",
            "Nasogastric tube tip is in the stomach."),
    "cvc_rij": ("Right internal jugular central venous catheter terminates in the mid SVC.",
                "Right internal jugular central venous catheter tip is in the SVC."),
    "cvc_lsc": ("Left subclavian central venous catheter tip is in the mid SVC.",
                "Left subclavian central venous catheter terminates in the SVC."),
    "pacemaker": ("Left chest wall pacemaker with leads in the right atrium and right ventricle.",
                  "Dual-chamber pacemaker with leads terminating in the right atrium and right "
                  "ventricle."),
}


def device_sentence(device: str, rng: np.random.Generator, ett_cm: int) -> Sentence:
  text = _pick(rng, _DEVICE_SENTENCES[device]).format(cm=ett_cm)
  if rng.random() < 0.15:
    text = "Interval placement: " + text[0].lower() + text[1:]
  return Sentence(text, {"Support Devices": chexpert.POSITIVE})


def _negations(study: Study, rng: np.random.Generator) -> list[Sentence]:
  """Explicit negations of some absent findings (never of a present or uncertain one)."""
  absent = {k for k in findings_lib.KIND_CATEGORY if not study.has(k)}
  if study.has("pneumonia"):
    absent.discard("consolidation")  # pneumonia sentences may assert consolidation
  out = []
  if "cardiomegaly" in absent and "mediastinum" in absent and rng.random() < 0.3:
    out.append(Sentence("The heart size and mediastinal contours are normal.",
                        {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0}))
  else:
    if "cardiomegaly" in absent and rng.random() < 0.5:
      out.append(Sentence(_pick(rng, ("Heart size is normal.", "Normal heart size.",
                                      "The cardiac silhouette is within normal limits.")),
                          {"Cardiomegaly": 0.0}))
    if "mediastinum" in absent and rng.random() < 0.3:
      out.append(Sentence(_pick(rng, ("The mediastinal contours are normal.",
                                      "Normal cardiomediastinal silhouette.")),
                          {"Enlarged Cardiomediastinum": 0.0}))
  if "consolidation" in absent and not study.findings and rng.random() < 0.4:
    out.append(Sentence("The lungs are clear without focal consolidation.",
                        {"Consolidation": 0.0}))
  elif "consolidation" in absent and rng.random() < 0.25:
    out.append(Sentence("No focal consolidation.", {"Consolidation": 0.0}))
  elif not study.findings:
    out.append(Sentence(_pick(rng, ("The lungs are clear.", "Lungs are well expanded and clear.")),
                        {}))
  if "edema" in absent and rng.random() < 0.25:
    out.append(Sentence(_pick(rng, ("No pulmonary edema.", "No evidence of pulmonary edema.")),
                        {"Edema": 0.0}))
  no_eff, no_ptx = "effusion" in absent, "pneumothorax" in absent
  if no_eff and no_ptx and rng.random() < 0.7:
    out.append(Sentence(_pick(rng, ("No pleural effusion or pneumothorax.",
                                    "There is no pleural effusion or pneumothorax.",
                                    "No pneumothorax or pleural effusion.")),
                        {"Pleural Effusion": 0.0, "Pneumothorax": 0.0}))
  else:
    if no_ptx and rng.random() < 0.6:
      out.append(Sentence(_pick(rng, ("No pneumothorax.", "There is no pneumothorax.")),
                          {"Pneumothorax": 0.0}))
    if no_eff and rng.random() < 0.5:
      out.append(Sentence("No pleural effusion.", {"Pleural Effusion": 0.0}))
  if "fracture" in absent and rng.random() < 0.1:
    out.append(Sentence("No displaced rib fracture.", {"Fracture": 0.0}))
  return out


def _resolved_sentence(kind: str, rng: np.random.Generator) -> Sentence:
  cat = findings_lib.KIND_CATEGORY[kind]
  side = _pick(rng, ("right", "left"))
  name = {"pneumothorax": f"{side} pneumothorax", "effusion": f"{side} pleural effusion",
          "consolidation": f"{side} lower lobe consolidation"}[kind]
  text = _pick(rng, (f"Previously seen {name} has resolved.",
                     f"The previously seen {name} has resolved."))
  return Sentence(text, {cat: chexpert.NEGATIVE})


def merge_labels(sentences) -> np.ndarray:
  """Merges sentence labels (positive > uncertain > negative) and applies the No Finding rule."""
  labels = np.full(chexpert.NUM_CATEGORIES, np.nan, np.float32)
  rank = {chexpert.POSITIVE: 3, chexpert.UNCERTAIN: 2, chexpert.NEGATIVE: 1}
  for sentence in sentences:
    for cat, value in sentence.labels.items():
      i = chexpert.INDEX[cat]
      if np.isnan(labels[i]) or rank[value] > rank[float(labels[i])]:
        labels[i] = value
  return chexpert.apply_no_finding_rule(labels)


# Anatomical reading order of the FINDINGS section.
_ORDER = ("cardiomegaly", "mediastinum", "edema", "consolidation", "pneumonia", "opacity",
          "atelectasis", "nodule", "mass", "effusion", "pneumothorax", "pleural_thickening",
          "fracture")
# Order of importance in the IMPRESSION.
_IMPRESSION_ORDER = ("pneumothorax", "effusion", "pneumonia", "consolidation", "edema", "mass",
                     "nodule", "opacity", "cardiomegaly", "mediastinum", "fracture", "atelectasis",
                     "pleural_thickening")


def write_report(study: Study, rng: np.random.Generator, *, ett_cm: int = 4) -> Report:
  """Writes the report of `study` and its labels.

  Args:
    study: the ground truth.
    rng: randomness for the wording.
    ett_cm: distance of the endotracheal tube tip above the carina (drawn the same).

  Returns:
    The Report.
  """
  device_sents = [device_sentence(d, rng, ett_cm) for d in study.devices]
  if not study.findings and not study.resolved and rng.random() < 0.6:
    fixed, impression = _FIXED_NORMALS[int(rng.choice(len(_FIXED_NORMALS), p=(0.5, 0.3, 0.2)))]
    find_sents = device_sents + [Sentence(text, dict(labels)) for text, labels in fixed]
    imp_sents = [Sentence(impression, {})]
  else:
    ordered = sorted(study.findings, key=lambda f: _ORDER.index(f.kind))
    find_sents = device_sents + [_finding_sentence(f, rng) for f in ordered]
    find_sents += [_resolved_sentence(k, rng) for k in study.resolved]
    find_sents += _negations(study, rng)
    important = sorted(study.findings, key=lambda f: _IMPRESSION_ORDER.index(f.kind))
    imp_sents = [_impression_sentence(f, rng) for f in important
                 if f.kind not in ("atelectasis", "pleural_thickening") or rng.random() < 0.5]
    if not imp_sents:
      imp_sents = [Sentence(_pick(rng, _NORMAL_IMPRESSIONS, p=(0.7, 0.15, 0.1, 0.05)), {})]
  if study.devices and rng.random() < 0.3:
    imp_sents.insert(0, Sentence("Lines and tubes as above.", {}))
  findings_text = " ".join(s.text for s in find_sents)
  impression_text = " ".join(s.text for s in imp_sents)
  sentences = tuple(find_sents + imp_sents)
  return Report(findings=findings_text, impression=impression_text,
                text=f"FINDINGS: {findings_text}\n\nIMPRESSION: {impression_text}",
                sentences=sentences, labels=merge_labels(sentences))
