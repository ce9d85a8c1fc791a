"""Per-study anatomy and acquisition parameters of a SynthCXR radiograph.

Coordinates are normalised: u in [-1, 1] left to right on the image, v in [-1, 1] top to bottom.
Radiological convention: the patient's right is on the image's left (u < 0). "Local" lateral
coordinates x = -u (right lung) or x = u (left lung) grow from the midline to the chest wall.
"""

import dataclasses

import numpy as np

# Normalised units per centimetre: the inner thorax (~30 cm) spans ~1.4 units.
UNITS_PER_CM = 0.048


@dataclasses.dataclass(frozen=True)
class Anatomy:
  """Sampled patient and acquisition parameters (see module docstring for the coordinates).

  Attributes:
    view: "PA" or "AP".
    rot, du, dv, scale: patient rotation (radians), shift and size on the detector.
    thorax_w: inner chest-wall half width at the costophrenic angles (the CTR denominator / 2).
    apex_v, apex_x: lung apex height and lateral position.
    cp_v: costophrenic angle height, (right, left).
    dome_h: dome height above the costophrenic angles, (right, left).
    med_x: medial lung border below the hilum.
    ctr: cardiothoracic ratio of a normal heart in this view (findings may enlarge it).
    heart_hb, heart_tilt, heart_right_frac: heart vertical semi-axis, tilt (radians) and the
      fraction of its width right of the midline.
    med_w: superior mediastinum half width; knob_r aortic knob radius.
    carina_v: carina height.
    rib_s0, rib_k, rib_curve: rib spacing at the top, its growth and the posterior-rib droop.
    body_w, soft: soft-tissue half width and density.
    gain, noise, grad_u, grad_v: exposure (attenuation to intensity), quantum noise, heel effect.
    vessel_idx, texture_idx, tex_off: texture-bank choices and offsets.
  """

  view: str
  rot: float
  du: float
  dv: float
  scale: float
  thorax_w: float
  apex_v: float
  apex_x: float
  cp_v: tuple[float, float]
  dome_h: tuple[float, float]
  med_x: float
  ctr: float
  heart_hb: float
  heart_tilt: float
  heart_right_frac: float
  med_w: float
  knob_r: float
  carina_v: float
  rib_s0: float
  rib_k: float
  rib_curve: float
  body_w: float
  soft: float
  gain: float
  noise: float
  grad_u: float
  grad_v: float
  vessel_idx: int
  texture_idx: int
  tex_off: tuple[int, int]

  def dome_top(self, side: int) -> float:
    """Dome summit height; side 0 = right, 1 = left."""
    return self.cp_v[side] - self.dome_h[side]


def sample_anatomy(rng: np.random.Generator, view: str, *, num_vessel: int,
                   num_texture: int) -> Anatomy:
  """Samples one patient's anatomy and exposure for `view` ("PA" or "AP")."""
  ap = view == "AP"
  u = rng.uniform
  # AP films: supine/semi-erect, shallower inspiration, more rotation, magnified heart.
  cp = u(0.5, 0.62) - (0.06 if ap else 0.0)
  dome_h = u(0.16, 0.23)
  return Anatomy(
      view=view,
      rot=float(np.deg2rad(u(-5, 5) if ap else u(-3, 3))),
      du=u(-0.05, 0.05), dv=u(-0.04, 0.05), scale=u(0.93, 1.05),
      thorax_w=u(0.66, 0.74),
      apex_v=u(-0.8, -0.7) + (0.03 if ap else 0.0),
      apex_x=u(0.26, 0.32),
      cp_v=(cp, cp + u(0.0, 0.05)),
      dome_h=(dome_h + u(0.0, 0.03), dome_h - u(0.0, 0.03)),
      med_x=u(0.07, 0.1),
      ctr=u(0.42, 0.49) if ap else u(0.38, 0.46),
      heart_hb=u(0.27, 0.32),
      heart_tilt=u(0.25, 0.45),
      heart_right_frac=u(0.3, 0.38),
      med_w=u(0.11, 0.14) + (0.015 if ap else 0.0),
      knob_r=u(0.045, 0.065),
      carina_v=u(-0.28, -0.2),
      rib_s0=u(0.095, 0.11),
      rib_k=u(0.3, 0.45),
      rib_curve=u(0.55, 0.75),
      body_w=u(0.84, 0.95),
      soft=u(0.46, 0.56),
      gain=u(1.9, 2.5),
      noise=u(0.012, 0.03) if ap else u(0.008, 0.02),
      grad_u=u(-0.05, 0.05), grad_v=u(-0.05, 0.05),
      vessel_idx=int(rng.integers(num_vessel)),
      texture_idx=int(rng.integers(num_texture)),
      tex_off=(int(rng.integers(0, 1 << 16)), int(rng.integers(0, 1 << 16))),
  )
