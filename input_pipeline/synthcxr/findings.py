"""What a SynthCXR study contains: sampled findings and devices (no text, no pixels).

A `Study` is the generator's ground truth. `reports.py` turns it into report text and CheXpert
labels; `render.py` draws it. Both read the same `Study`, which is how the label, the text and the
image agree.

Uncertain findings ("possible", "cannot exclude", ...; label -1) are always drawn, at the mildest
severity of their kind: under the U-ones convention the clinical vector treats them as present, so
a faint but real correlate is the consistent choice.
"""

import dataclasses

import numpy as np

# Finding kinds -> the CheXpert category they assert.
KIND_CATEGORY = {
    "cardiomegaly": "Cardiomegaly",
    "mediastinum": "Enlarged Cardiomediastinum",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "opacity": "Lung Opacity",
    "edema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "effusion": "Pleural Effusion",
    "pleural_thickening": "Pleural Other",
    "fracture": "Fracture",
}

# Relative frequency of each kind among the findings of abnormal studies. With ~43% abnormal
# studies and ~1.6 findings each, prevalence ~= 0.7 * weight: the four key findings (effusion,
# cardiomegaly, pneumothorax, support devices) land at roughly 9-14%.
KIND_WEIGHTS = {
    "effusion": 0.19,
    "cardiomegaly": 0.16,
    "pneumothorax": 0.13,
    "opacity": 0.08,
    "atelectasis": 0.08,
    "pneumonia": 0.07,
    "consolidation": 0.06,
    "edema": 0.06,
    "nodule": 0.035,
    "mass": 0.025,
    "fracture": 0.04,
    "mediastinum": 0.04,
    "pleural_thickening": 0.035,
}

# Probability that a finding is reported with uncertainty (label -1).
UNCERTAIN_PROB = {
    "effusion": 0.12, "cardiomegaly": 0.08, "pneumothorax": 0.12, "opacity": 0.15,
    "atelectasis": 0.2, "pneumonia": 0.65, "consolidation": 0.15, "edema": 0.2, "nodule": 0.2,
    "mass": 0.1, "fracture": 0.2, "mediastinum": 0.2, "pleural_thickening": 0.1,
}

SEVERITIES = {
    "effusion": ("small", "moderate", "large"),
    "pneumothorax": ("small", "moderate", "large"),
    "cardiomegaly": ("mild", "moderate", "severe"),
    "edema": ("mild", "moderate", "severe"),
    "mediastinum": ("mild", "moderate", "moderate"),
    "opacity": ("mild", "moderate", "moderate"),
    "consolidation": ("moderate", "large", "large"),
    "pneumonia": ("moderate", "large", "large"),
    "atelectasis": ("mild", "mild", "moderate"),
    "nodule": ("small", "small", "small"),
    "mass": ("large", "large", "large"),
    "fracture": ("acute", "acute", "healing"),
    "pleural_thickening": ("mild", "mild", "mild"),
}

DEVICES = ("ett", "ngt", "cvc_rij", "cvc_lsc", "pacemaker")
NORMAL_FRACTION = 0.57
NUM_FINDINGS_PROBS = (0.5, 0.35, 0.15)  # 1, 2 or 3 findings in an abnormal study
TEMPORALS = ("new", "unchanged", "increased", "decreased")


@dataclasses.dataclass(frozen=True)
class Finding:
  """One drawn and reported abnormality.

  Attributes:
    kind: a key of KIND_CATEGORY.
    certain: False when reported with uncertainty (label -1.0); drawn at mild severity.
    side: "right" / "left" (patient's side: image left is the patient's right) / "bilateral" / "".
    zone: "upper" / "middle" / "lower" / "apical" / "lateral" / "".
    severity: an entry of SEVERITIES[kind].
    rib: rib number (1 = first posterior rib) for fractures, else 0.
    temporal: "" or an entry of TEMPORALS (wording only; the image shows the current state).
    size_cm: diameter of a nodule or mass (drawn to scale), else 0.
  """

  kind: str
  certain: bool = True
  side: str = ""
  zone: str = ""
  severity: str = ""
  rib: int = 0
  temporal: str = ""
  size_cm: float = 0.0


@dataclasses.dataclass(frozen=True)
class Study:
  """Ground truth of one synthetic study.

  Attributes:
    view: "PA" or "AP".
    findings: the abnormalities (empty for a normal study).
    devices: entries of DEVICES present.
    resolved: kinds reported as resolved since a prior study (negated, not drawn).
  """

  view: str
  findings: tuple[Finding, ...] = ()
  devices: tuple[str, ...] = ()
  resolved: tuple[str, ...] = ()

  def has(self, kind: str) -> bool:
    return any(f.kind == kind for f in self.findings)

  def categories(self) -> set[str]:
    """CheXpert categories of the drawn findings (and Support Devices)."""
    cats = {KIND_CATEGORY[f.kind] for f in self.findings}
    if self.devices:
      cats.add("Support Devices")
    return cats


def _choice(rng: np.random.Generator, options, p=None):
  return options[int(rng.choice(len(options), p=p))]


def sample_finding(rng: np.random.Generator, kind: str) -> Finding:
  """Samples location, severity, certainty and wording-time of one finding."""
  certain = bool(rng.random() >= UNCERTAIN_PROB[kind])
  severities = SEVERITIES[kind]
  severity = severities[0] if not certain else _choice(rng, severities)
  side, zone, rib = "", "", 0
  if kind == "effusion":
    side = _choice(rng, ("right", "left", "bilateral"), p=(0.35, 0.3, 0.35))
  elif kind == "pneumothorax":
    side = _choice(rng, ("right", "left"))
    zone = "apical" if severity == "small" else "lateral"
  elif kind in ("opacity", "consolidation", "pneumonia"):
    side = _choice(rng, ("right", "left", "bilateral"), p=(0.45, 0.35, 0.2))
    zone = _choice(rng, ("upper", "middle", "lower"), p=(0.25, 0.25, 0.5))
  elif kind == "atelectasis":
    side = _choice(rng, ("right", "left", "bilateral"), p=(0.3, 0.35, 0.35))
    zone = "lower"
  elif kind == "edema":
    side = "bilateral"
  elif kind in ("nodule", "mass"):
    side = _choice(rng, ("right", "left"))
    zone = _choice(rng, ("upper", "middle", "lower"))
  elif kind == "fracture":
    side = _choice(rng, ("right", "left"))
    rib = int(rng.integers(4, 9))
  elif kind == "pleural_thickening":
    side = _choice(rng, ("right", "left", "bilateral"), p=(0.4, 0.4, 0.2))
    zone = _choice(rng, ("apical", "lateral"))
  size_cm = 0.0
  if kind == "nodule":
    size_cm = float(np.round(rng.uniform(1.4, 2.6), 1))
  elif kind == "mass":
    size_cm = float(np.round(rng.uniform(3.5, 6.5), 1))
  temporal = ""
  if rng.random() < 0.3:
    temporal = _choice(rng, TEMPORALS, p=(0.35, 0.35, 0.15, 0.15))
    if temporal in ("increased", "decreased") and kind not in ("effusion", "pneumothorax",
                                                                  "edema", "opacity",
                                                                  "consolidation"):
      temporal = "unchanged"
  return Finding(kind=kind, certain=certain, side=side, zone=zone, severity=severity, rib=rib,
                 temporal=temporal, size_cm=size_cm)


def sample_study(rng: np.random.Generator) -> Study:
  """Samples the ground truth of one study: view, findings, devices, resolved findings."""
  view = "AP" if rng.random() < 0.3 else "PA"
  # Portable AP films are the ICU ones: that is where the tubes and lines are.
  device_prob = 0.35 if view == "AP" else 0.05
  devices: tuple[str, ...] = ()
  if rng.random() < device_prob:
    mask = rng.random(len(DEVICES)) < np.array([0.45, 0.4, 0.4, 0.2, 0.25])
    if not mask.any():
      mask[int(rng.integers(len(DEVICES)))] = True
    devices = tuple(d for d, m in zip(DEVICES, mask) if m)
  findings: tuple[Finding, ...] = ()
  if rng.random() >= NORMAL_FRACTION:
    kinds = list(KIND_WEIGHTS)
    weights = np.array([KIND_WEIGHTS[k] for k in kinds])
    n = 1 + int(rng.choice(len(NUM_FINDINGS_PROBS), p=NUM_FINDINGS_PROBS))
    chosen = rng.choice(len(kinds), size=n, replace=False, p=weights / weights.sum())
    # Nodule and mass share one category: keep at most one of them.
    picked = []
    for i in sorted(int(c) for c in chosen):
      kind = kinds[i]
      if kind == "mass" and "nodule" in picked:
        continue
      picked.append(kind)
    findings = tuple(sample_finding(rng, k) for k in picked)
  resolved: tuple[str, ...] = ()
  present = {f.kind for f in findings}
  if rng.random() < 0.05:
    kind = _choice(rng, ("pneumothorax", "effusion", "consolidation"))
    if kind not in present:
      resolved = (kind,)
  return Study(view=view, findings=findings, devices=devices, resolved=resolved)
