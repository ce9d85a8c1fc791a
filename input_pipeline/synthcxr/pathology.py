"""Visual correlates of SynthCXR findings, drawn into a `scene.Canvas`.

Cardiomegaly, widened mediastinum and rib fractures change the anatomy itself and are applied in
`render.py` before the normal anatomy is drawn; everything else is drawn here on top of it.
Sides are the patient's: "right" is the image's left.
"""

import numpy as np

from input_pipeline.synthcxr import anatomy as anatomy_lib
from input_pipeline.synthcxr import findings as findings_lib
from input_pipeline.synthcxr import scene

ramp = scene.ramp
Finding = findings_lib.Finding

# Cardiothoracic ratio ranges by severity (normal hearts are drawn at 0.38-0.49).
CTR_RANGE = {"uncertain": (0.53, 0.56), "mild": (0.55, 0.58), "moderate": (0.58, 0.63),
             "severe": (0.63, 0.69)}
# Superior mediastinum half width when widened (normal 0.11-0.155).
MED_W_RANGE = {"uncertain": (0.19, 0.21), "mild": (0.2, 0.23), "moderate": (0.23, 0.27)}
# Effusion height as a fraction of the apex-to-costophrenic height.
EFFUSION_HEIGHT = {"small": (0.14, 0.18), "moderate": (0.26, 0.34), "large": (0.42, 0.55)}
# Pneumothorax: fraction by which the lung outline shrinks (apical gap ~ 1.1 x this).
PNEUMOTHORAX_SHRINK = {"small": 0.08, "moderate": 0.15, "large": 0.25}


def _sides(c: scene.Canvas, side: str) -> list[scene.LungSide]:
  if side == "bilateral":
    return list(c.sides)
  return [c.sides[scene.SIDES.index(side)]]


def _zone_center(c: scene.Canvas, s: scene.LungSide, zone: str,
                 rng: np.random.Generator) -> tuple[float, float]:
  a = c.anat
  height = a.cp_v[s.index] - a.apex_v
  frac = {"upper": 0.27, "middle": 0.52, "lower": 0.0}[zone or "lower"]
  v = a.dome_top(s.index) - 0.1 if zone == "lower" else a.apex_v + frac * height
  return float(rng.uniform(0.33, 0.47)), float(v + rng.uniform(-0.04, 0.04))


def patchy(c: scene.Canvas, f: Finding, rng: np.random.Generator, texture: np.ndarray,
           amount: float) -> None:
  """Airspace opacity / consolidation / pneumonia: textured patch in a lobe or zone."""
  for s in _sides(c, f.side):
    xc, vc = _zone_center(c, s, f.zone, rng)
    rx, ry = rng.uniform(0.22, 0.3), rng.uniform(0.16, 0.22)
    dist = np.sqrt(((s.x - xc) * (1.0 / rx)) ** 2 + ((s.v - vc) * (1.0 / ry)) ** 2)
    # Ragged, mottled edges: the smooth noise decides where the margin falls.
    patch = np.clip((1.0 - dist) * 1.6 + 0.8 * texture[s.win] - 0.1, 0.0, 1.0)
    c.add_opacity(s.win, amount * patch * s.mask)


def effusion(c: scene.Canvas, f: Finding, rng: np.random.Generator) -> None:
  """Dependent fluid with a meniscus rising toward the chest wall; hides dome and CP angle."""
  size = "small" if not f.certain else f.severity
  frac = rng.uniform(*EFFUSION_HEIGHT[size])
  a = c.anat
  for s in _sides(c, f.side):
    cp = a.cp_v[s.index]
    top = cp - frac * (cp - a.apex_v)
    # Meniscus: the fluid surface is flat medially and climbs the lateral chest wall.
    climb = rng.uniform(0.1, 0.16) * (0.6 + frac)
    level = top - climb * np.exp((s.x - a.thorax_w) * (1.0 / 0.12))
    fluid = ramp(s.v - level, 0.04) * ramp(s.d_lat + 0.03, 0.02) * ramp(s.d_med + 0.02, 0.02)
    c.add_opacity(s.win, 0.97 * fluid)


def pneumothorax(c: scene.Canvas, f: Finding, rng: np.random.Generator) -> None:
  """Lucent apical/lateral rim without vessels, bounded by a thin visible pleural line.

  The collapsed lung is the lung outline shrunk toward its lower medial corner, so the pleural
  line runs parallel to the chest wall and the gap is widest at the apex.
  """
  size = "small" if not f.certain else f.severity
  shrink = PNEUMOTHORAX_SHRINK[size] * rng.uniform(0.9, 1.1)
  s = _sides(c, f.side)[0]
  a, px = c.anat, c.frame.px
  cx, cv = a.med_x + 0.05, a.dome_top(s.index)
  k = 1.0 - shrink
  _, *dists = scene.lung_distances(a, s.index, cx + (s.x - cx) / k, cv + (s.v - cv) / k)
  collapsed = k * np.minimum(np.minimum(dists[0], dists[1]), np.minimum(dists[2], dists[3]))
  original = np.minimum(np.minimum(s.d_lat, s.d_med), np.minimum(s.d_dome, s.d_top))
  gap = s.inside * ramp(-collapsed, px)
  line = s.inside * ramp(0.5 * px + 0.004 - np.abs(collapsed), px)
  line *= ramp(original - collapsed - 1.5 * px, px)  # only where the lung has pulled away
  np.maximum(c.lucent[s.win], gap, out=c.lucent[s.win])
  c.bone[s.win] += 0.14 * line
  if size != "small":
    c.add_opacity(s.win, 0.12 * s.inside * (1.0 - gap))  # the collapsed lung is denser


def atelectasis(c: scene.Canvas, f: Finding, rng: np.random.Generator) -> None:
  """Plate-like (linear) opacities above the dome(s)."""
  bands = 2 if f.severity == "moderate" else 1
  for s in _sides(c, f.side):
    for _ in range(bands):
      vc = c.anat.dome_top(s.index) - rng.uniform(0.05, 0.15)
      xc = rng.uniform(0.3, 0.45)
      half_len = rng.uniform(0.08, 0.13)
      thick = rng.uniform(0.025, 0.04)
      tilt = rng.uniform(-0.2, 0.2)
      band = ramp(0.5 * thick - np.abs(s.v - vc - tilt * (s.x - xc)), c.frame.px)
      band *= ramp(half_len - np.abs(s.x - xc), 0.05)
      c.add_opacity(s.win, 0.75 * band * s.mask)


def edema(c: scene.Canvas, f: Finding, rng: np.random.Generator, texture: np.ndarray) -> None:
  """Bilateral perihilar ("bat wing") haze fading toward the periphery."""
  amount = {"mild": 0.4, "moderate": 0.55, "severe": 0.7}[f.severity if f.certain else "mild"]
  vh = c.anat.carina_v + 0.15
  for s in c.sides:
    q = ((s.x - 0.15) * (1.0 / 0.3)) ** 2 + ((s.v - vh) * (1.0 / 0.34)) ** 2
    haze = np.exp(-q) * (1.0 + 0.25 * texture[s.win])
    c.add_opacity(s.win, amount * rng.uniform(0.9, 1.1) * haze * s.mask)


def lesion(c: scene.Canvas, f: Finding, rng: np.random.Generator) -> None:
  """Nodule (round, well defined) or mass (large, lobulated)."""
  s = _sides(c, f.side)[0]
  xc, vc = _zone_center(c, s, f.zone, rng)
  if f.zone == "lower":
    vc -= 0.05
  r = 0.5 * f.size_cm * anatomy_lib.UNITS_PER_CM * 1.3
  lobes = [(0.0, 0.0, r)]
  if f.kind == "mass":
    for _ in range(2):
      ang = rng.uniform(0, 2 * np.pi)
      lobes.append((0.6 * r * np.cos(ang), 0.6 * r * np.sin(ang), 0.65 * r))
  for dx, dv, rr in lobes:
    dist = np.sqrt((s.x - xc - dx) ** 2 + (s.v - vc - dv) ** 2)
    c.add_opacity(s.win, 0.9 * ramp(rr - dist, c.frame.px + 0.15 * rr))


def pleural_thickening(c: scene.Canvas, f: Finding, rng: np.random.Generator) -> None:
  """Smooth pleural band along the lateral chest wall or an apical cap."""
  px = c.frame.px
  for s in _sides(c, f.side):
    thick = rng.uniform(0.05, 0.07)
    if f.zone == "apical":
      edge = np.minimum(s.d_lat, s.d_top)
      band = ramp(thick - edge, px) * ramp(0.3 - s.t, 0.08)
    else:
      band = ramp(thick - s.d_lat, px) * ramp(s.t - 0.3, 0.1) * ramp(0.88 - s.t, 0.08)
    c.add_opacity(s.win, 0.9 * band * s.inside)


def draw_finding(c: scene.Canvas, f: Finding, rng: np.random.Generator,
                 texture: np.ndarray) -> None:
  """Draws one finding (the anatomy-changing kinds are no-ops here)."""
  kind = f.kind
  if kind in ("consolidation", "pneumonia"):
    patchy(c, f, rng, texture, 0.85 if f.certain else 0.6)
  elif kind == "opacity":
    patchy(c, f, rng, texture, 0.55 if f.certain else 0.45)
  elif kind == "effusion":
    effusion(c, f, rng)
  elif kind == "pneumothorax":
    pneumothorax(c, f, rng)
  elif kind == "atelectasis":
    atelectasis(c, f, rng)
  elif kind == "edema":
    edema(c, f, rng, texture)
  elif kind in ("nodule", "mass"):
    lesion(c, f, rng)
  elif kind == "pleural_thickening":
    pleural_thickening(c, f, rng)
  elif kind not in ("cardiomegaly", "mediastinum", "fracture"):
    raise ValueError(f"unknown finding kind {kind!r}")
