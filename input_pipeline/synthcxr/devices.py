"""Radio-opaque support devices (very bright on the image), drawn where the report places them."""

import numpy as np

from input_pipeline.synthcxr import anatomy as anatomy_lib
from input_pipeline.synthcxr import scene


def draw_devices(c: scene.Canvas, devices, rng: np.random.Generator, *, ett_cm: int) -> None:
  """Draws each device of `devices` (entries of findings.DEVICES) into c.device.

  Args:
    c: the canvas (anatomy already drawn, so the heart position is known).
    devices: device names.
    rng: jitter of the device paths.
    ett_cm: endotracheal tube tip distance above the carina, as the report states.
  """
  a, f, h = c.anat, c.frame, c.heart
  j = lambda scale=0.015: float(rng.uniform(-scale, scale))  # noqa: E731
  cv = a.carina_v
  svc_tip = (-0.05 + j(), cv + 0.06 + j())
  for device in devices:
    if device == "ett":
      tip = cv - ett_cm * anatomy_lib.UNITS_PER_CM
      pts = [(-0.01 + j(0.01), -1.3), (-0.01 + j(0.01), -0.8), (-0.01 + j(0.005), tip)]
      f.line(c.device, pts, 0.024, 1.8, smooth=1)
      f.line(c.device, pts, 0.008, 2.6, smooth=1)  # radio-opaque stripe
    elif device == "ngt":
      dome = a.dome_top(1)
      pts = [(0.0 + j(), -1.3), (0.02 + j(), cv), (0.05 + j(), dome - 0.05), (0.12, dome + 0.1),
             (0.26 + j(0.03), dome + 0.13 + j()), (0.33 + j(0.03), dome + 0.08 + j())]
      f.line(c.device, pts, 0.016, 2.2)
    elif device == "cvc_rij":
      pts = [(-0.24 + j(), -1.3), (-0.14 + j(), -0.8), (-0.07, a.apex_v + 0.12), svc_tip]
      f.line(c.device, pts, 0.014, 2.2)
    elif device == "cvc_lsc":
      pts = [(0.7, a.apex_v - 0.05 + j()), (0.4, a.apex_v + 0.02 + j()),
             (0.12, a.apex_v + 0.1 + j()), (-0.03, a.apex_v + 0.2), svc_tip]
      f.line(c.device, pts, 0.014, 2.2)
    elif device == "pacemaker":
      gu, gv = 0.5 + j(0.04), a.apex_v + 0.2 + j(0.03)
      f.ellipse(c.device, gu, gv, 0.085, 0.06, 3.0, power=4.0)
      ra = (h["u"] - 0.45 * h["a"], h["v"] - 0.45 * h["b"])
      rv = (h["u"] + 0.25 * h["a"] + j(0.03), h["v"] + 0.45 * h["b"])
      start = [(gu - 0.06, gv), (0.3, a.apex_v + 0.1), (0.1, a.apex_v + 0.16), (-0.04, cv + 0.05)]
      f.line(c.device, start + [ra], 0.012, 2.6)
      f.line(c.device, start + [(ra[0] + 0.02, ra[1] + 0.02), (h["u"], h["v"] + 0.3 * h["b"]),
                                rv], 0.012, 2.6)
    else:
      raise ValueError(f"unknown device {device!r}")
