"""Density layers of one radiograph and the normal anatomy drawn into them.

Layers (float32 [S, S], normalised density units; intensity = 1 - exp(-gain * density)):
  soft:   soft tissue (body outline, mediastinum, heart, abdomen), trachea air subtracted.
  lung:   aerated lung fraction 0..1 (lung fields minus what heart and mediastinum hide).
  opac:   fraction of that air replaced by fluid/tissue (opacities, effusions), 0..1.
  lucent: pneumothorax spaces (extra air, no vessels), 0..1.
  bone:   ribs, clavicles, spine, scapular borders; pleural lines.
  device: radio-opaque devices (very bright).
"""

import dataclasses

import numpy as np

from input_pipeline.synthcxr import anatomy as anatomy_lib
from input_pipeline.synthcxr import draw

Anatomy = anatomy_lib.Anatomy
ramp = draw.ramp

SIDES = ("right", "left")  # index 0 = patient right = image left (u < 0)
SIGNS = (-1.0, 1.0)


@dataclasses.dataclass
class LungSide:
  """Per-side lung geometry on a pixel window (arrays are window-shaped).

  Attributes:
    index: 0 right, 1 left; sign: -1 / +1 (image u direction of "lateral").
    win: (rows, cols) window of the full image.
    x: lateral coordinate (grows toward the chest wall); v: vertical coordinate.
    t: 0 at the apex .. 1 at the costophrenic angle.
    d_lat, d_med, d_dome, d_top: signed distances inside the lateral, medial, diaphragm and apex
      borders (positive inside).
    mask: aerated lung field 0..1, thinning toward the chest wall (before the heart and
      mediastinum hide part of it).
    inside: the same field with a hard (one pixel) lateral border.
  """

  index: int
  sign: float
  win: tuple[slice, slice]
  x: np.ndarray
  v: np.ndarray
  t: np.ndarray
  d_lat: np.ndarray
  d_med: np.ndarray
  d_dome: np.ndarray
  d_top: np.ndarray
  mask: np.ndarray
  inside: np.ndarray


@dataclasses.dataclass
class Canvas:
  """All layers of one image plus the geometry the findings need."""

  frame: draw.Frame
  anat: Anatomy
  soft: np.ndarray
  lung: np.ndarray
  opac: np.ndarray
  lucent: np.ndarray
  bone: np.ndarray
  device: np.ndarray
  sides: tuple[LungSide, LungSide]
  heart: dict[str, float]
  ctr: float
  med_w: float

  @classmethod
  def create(cls, frame: draw.Frame, anat: Anatomy, *, ctr: float, med_w: float) -> "Canvas":
    shape = frame.u.shape
    z = lambda: np.zeros(shape, np.float32)  # noqa: E731
    canvas = cls(frame=frame, anat=anat, soft=z(), lung=z(), opac=z(), lucent=z(), bone=z(),
                 device=z(), sides=(None, None), heart={}, ctr=ctr, med_w=med_w)
    canvas.sides = (lung_side(frame, anat, 0), lung_side(frame, anat, 1))
    return canvas

  def add_opacity(self, win, amount: np.ndarray) -> None:
    """Unites `amount` (0..1, window-shaped) with the opacity layer: o = 1 - (1-o)(1-a)."""
    region = self.opac[win]
    region += np.clip(amount, 0.0, 1.0) * (1.0 - region)


def dome_line(a: Anatomy, index: int, x: np.ndarray) -> np.ndarray:
  """Height of the hemidiaphragm at lateral coordinate x (a parabola; flatter medially)."""
  peak = a.apex_x + 0.08
  rel = (x - peak) * (1.0 / (a.thorax_w - peak))
  rel = np.where(rel < 0, 0.6 * rel, rel)
  return a.dome_top(index) + a.dome_h[index] * rel * rel


def lung_distances(a: Anatomy, index: int, x: np.ndarray, v: np.ndarray):
  """Signed distances inside one lung's borders at lateral x, height v (positive inside).

  Returns:
    (t, d_lat, d_med, d_dome, d_top): t runs 0 at the apex .. 1 at the costophrenic angle.
  """
  w, cp = a.thorax_w, a.cp_v[index]
  t = np.clip((v - a.apex_v) * (1.0 / (cp - a.apex_v)), 0.0, 1.0)
  # Lateral border: a quarter-ellipse from the apex to the widest point at 80% of the height,
  # then straight down to the costophrenic angle. Medial border: turns in over the top 30%.
  p = np.minimum(t * (1.0 / 0.8), 1.0)
  x_lat = a.apex_x + (w - a.apex_x) * np.sqrt(p * (2.0 - p))
  q = np.minimum(t * (1.0 / 0.3), 1.0)
  x_med = a.med_x + (a.apex_x - a.med_x) * (1.0 - np.sqrt(q * (2.0 - q)))
  return t, x_lat - x, x - x_med, dome_line(a, index, x) - v, v - a.apex_v


def lung_side(frame: draw.Frame, a: Anatomy, index: int) -> LungSide:
  """Lung field geometry of one side (see LungSide)."""
  sign = SIGNS[index]
  w = a.thorax_w
  lo, hi = (-w - 0.12, 0.05) if sign < 0 else (-0.05, w + 0.12)
  win = frame.window(lo, hi, a.apex_v - 0.08, a.cp_v[index] + 0.08)
  x = sign * frame.u[win]
  v = frame.v[win]
  t, d_lat, d_med, d_dome, d_top = lung_distances(a, index, x, v)
  inner = np.minimum(np.minimum(d_med, d_dome), d_top)
  inside = ramp(np.minimum(inner, d_lat), frame.px)
  mask = ramp(d_lat - 0.02, 0.05) * ramp(inner, frame.px)
  return LungSide(index=index, sign=sign, win=win, x=x, v=v, t=t, d_lat=d_lat, d_med=d_med,
                  d_dome=d_dome, d_top=d_top, mask=mask, inside=inside)


def draw_soft_tissue(c: Canvas) -> None:
  """Body outline, neck and shoulders, mediastinum, aortic knob, heart; lungs cut out."""
  a, f = c.anat, c.frame
  u, v = f.u, f.v
  s = np.clip((v + 1.08) * (1.0 / 0.4), 0.0, 1.0)  # neck (top) -> sloping shoulders
  body_w = 0.22 + (a.body_w - 0.22) * np.sqrt(s * (2.0 - s))
  depth = body_w - np.abs(u)  # soft tissue thins toward the skin line
  c.soft[...] = a.soft * ramp(depth, 0.03) * (0.55 + 0.45 * ramp(depth - 0.12, 0.24))
  # Heart: tilted ellipse with the requested cardiothoracic ratio, resting on the left dome.
  hw = c.ctr * a.thorax_w
  rf = a.heart_right_frac
  hb = a.heart_hb * (1.0 + 0.8 * max(c.ctr - 0.45, 0.0))
  tilt = a.heart_tilt
  ha = np.sqrt(max(hw ** 2 - (hb * np.sin(tilt)) ** 2, (0.6 * hb) ** 2)) / np.cos(tilt)
  hu = hw * (1.0 - 2.0 * rf)
  hv = a.dome_top(1) - 0.45 * hb
  c.heart = dict(u=hu, v=hv, a=ha, b=hb, tilt=tilt, half_width=hw)
  heart = np.zeros_like(c.soft)
  f.ellipse(heart, hu, hv, ha, hb, 1.0, tilt=tilt)
  # Superior mediastinum down to the heart: narrow at the thoracic inlet; a widened mediastinum
  # bulges on both sides around the aortic arch level. Aortic knob on the left.
  mwin = f.window(-0.5, 0.5, -1.3, hv + 0.1)
  mu, mv = u[mwin], v[mwin]
  half = a.med_w * (0.8 + 0.4 * np.clip((mv - a.apex_v) * (1.0 / (hv - a.apex_v)), 0.0, 1.0))
  bulge = c.med_w - a.med_w
  if bulge > 0:
    half = half + bulge * np.exp(-((mv - a.carina_v + 0.02) * (1.0 / 0.22)) ** 2)
  med = np.zeros_like(c.soft)
  med[mwin] = ramp(half - np.abs(mu + 0.01), f.px) * ramp(hv + 0.05 - mv, 0.05)
  np.maximum(med, heart, out=med)
  knob_r = a.knob_r * (1.0 + 2.0 * max(bulge, 0.0))
  f.ellipse(med, a.med_w * 0.5 + bulge * 0.8 + knob_r * 0.6, a.carina_v - 0.09, knob_r,
            knob_r * 1.1, 1.0)
  # The abdomen below the domes is as dense as the heart, so the heart's lower edge vanishes.
  for index, sign in enumerate(SIGNS):
    lo, hi = (-1.3, 0.0) if sign < 0 else (0.0, 1.3)
    win = f.window(lo, hi, a.dome_top(index) - 0.05, 1.3)
    x = np.minimum(sign * u[win], a.thorax_w)
    abdomen = ramp(v[win] - dome_line(a, index, x), f.px) * ramp(depth[win] - 0.1, 0.2)
    np.maximum(med[win], abdomen, out=med[win])
  c.soft += 0.12 * med
  # Hila: pulmonary arteries lateral to the mediastinum (the right one lower).
  hila = np.zeros_like(c.soft)
  for sign, dv in ((-1.0, 0.06), (1.0, 0.0)):
    f.ellipse(hila, sign * (a.med_w + 0.07), a.carina_v + 0.12 + dv, 0.06, 0.1, 1.0, soft=0.05)
  c.soft += 0.07 * hila
  # Trachea and main bronchi: air inside the mediastinum.
  airway = np.zeros_like(c.soft)
  cv = a.carina_v
  f.line(airway, [(-0.01, cv - 0.05), (-0.06, cv + 0.05), (-0.13, cv + 0.15)], 0.04, 1.0,
         smooth=1)
  f.line(airway, [(-0.01, cv - 0.05), (0.06, cv + 0.04), (0.15, cv + 0.11)], 0.035, 1.0,
         smooth=1)
  airway[mwin] = np.maximum(airway[mwin], ramp(0.03 - np.abs(mu + 0.01), f.px) *
                            ramp(cv - 0.04 - mv, f.px))  # trachea
  c.soft -= 0.12 * airway * med
  for side in c.sides:
    c.lung[side.win] = np.maximum(c.lung[side.win], side.mask)
  c.lung *= 1.0 - med
  # Gastric air bubble under the left dome.
  bubble = np.zeros_like(c.soft)
  f.ellipse(bubble, 0.3, a.dome_top(1) + 0.1, 0.07, 0.04, 1.0, soft=0.02)
  c.soft -= 0.18 * bubble


@dataclasses.dataclass(frozen=True)
class RibFracture:
  """A rib fracture: side sign (-1 right, +1 left), rib number, lateral position x, cortical step
  (normalised units, 0 = nondisplaced), gap width, and callus (healing) brightness."""

  sign: float
  rib: int
  x: float
  step: float
  gap: float
  callus: float


def draw_bones(c: Canvas, fracture: RibFracture | None = None) -> None:
  """Spine, ribs (optionally one fractured), clavicles and scapular borders into c.bone."""
  a, f = c.anat, c.frame
  # Spine: vertebral bodies with darker disc spaces.
  win = f.window(-0.12, 0.12, -1.3, 1.3)
  au = np.abs(f.u[win])
  disc = np.clip((np.cos(f.v[win] * (2 * np.pi / 0.085)) - 0.55) * 3.0, 0.0, 1.0)
  body = ramp(0.056 - au, f.px)
  c.bone[win] += body * (0.07 - 0.035 * disc) + 0.03 * ramp(0.01 - np.abs(au - 0.05), f.px)
  # Posterior ribs: bands of a phase field that droops laterally, spacing growing caudally.
  w = a.thorax_w
  win = f.window(-w - 0.1, w + 0.1, a.apex_v - 0.15, a.cp_v[0] + 0.2)
  x = np.abs(f.u[win])
  y = f.v[win] - (a.rib_curve * x * x - 0.08 * x) - (a.apex_v - 0.1)
  k, s0 = a.rib_k, a.rib_s0
  phase = np.log1p(k * np.maximum(y, 0.0)) * (1.0 / (k * s0))
  broken = None
  if fracture is not None:
    # Rib n occupies phase [n - 1, n - 0.64]; shift its lateral part by a step.
    on_side = (f.u[win] * fracture.sign) > 0
    broken = on_side * ramp(0.4 - np.abs(phase - (fracture.rib - 0.82)), 0.1)
    y = y - fracture.step * broken * ramp(x - fracture.x, f.px)
    phase = np.log1p(k * np.maximum(y, 0.0)) * (1.0 / (k * s0))
  spacing = s0 * (1.0 + k * np.maximum(y, 0.0))
  frac = phase - np.floor(phase)
  edge = np.minimum(frac, 0.36 - frac) * spacing  # distance inside the rib band
  rib = ramp(edge, f.px)
  if broken is not None and fracture.gap > 0:
    rib *= 1.0 - broken * ramp(0.5 * fracture.gap - np.abs(x - fracture.x), f.px)
  cortex = rib - ramp(edge - 0.012, f.px)
  keep = ramp(w + 0.06 - x, 0.04) * ramp(y, 0.02) * ramp(a.cp_v[0] + 0.12 - f.v[win], 0.08)
  c.bone[win] += keep * (0.045 * rib + 0.045 * cortex)
  # Anterior ribs: fainter, running down toward the midline, lateral half only.
  ya = f.v[win] + 0.32 * (w - x)
  fa = ya * (1.0 / 0.13)
  fa = fa - np.floor(fa)
  ant = ramp(np.minimum(fa, 0.3 - fa) * 0.13, f.px) * ramp(x - 0.28, 0.15)
  c.bone[win] += 0.035 * ant * keep
  if fracture is not None and fracture.callus > 0:
    at = (broken > 0.9) & (np.abs(x - fracture.x) < 0.03)
    cv = float(np.mean(f.v[win][at])) if at.any() else 0.0
    f.ellipse(c.bone, fracture.sign * fracture.x, cv, 0.05, 0.032, fracture.callus, soft=0.01,
              combine="add")
  # Clavicles (higher and flatter on AP films) and the medial borders of the scapulae (over the
  # lungs on AP films, rotated out of them on PA films); both sides at once through |u|.
  ap = a.view == "AP"
  cv = a.apex_v + (-0.04 if ap else 0.06)
  droop = 0.08 if ap else 0.14  # how much higher the lateral end lies
  win = f.window(-0.7, 0.7, cv - droop - 0.06, cv + 0.05)
  x = np.abs(f.u[win])
  centre = cv - droop * ((x - 0.06) * (1.0 / 0.58)) ** 2
  clav = ramp(0.0225 - np.abs(f.v[win] - centre), f.px) * ramp(x - 0.06, f.px)
  clav *= ramp(0.66 - x, 0.03)
  c.bone[win] += 0.15 * clav
  border = 0.55 if ap else w + 0.04
  win = f.window(-border - 0.15, border + 0.15, a.apex_v - 0.04, -0.03)
  x = np.abs(f.u[win])
  line_x = border - 0.02 + 0.12 * (f.v[win] - a.apex_v) * (1.0 / (-0.05 - a.apex_v))
  c.bone[win] += 0.06 * ramp(0.0075 - np.abs(x - line_x), f.px)
