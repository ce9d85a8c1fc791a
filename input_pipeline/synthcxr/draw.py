"""Vectorised drawing primitives on normalised coordinate grids (numpy, float32).

A `Frame` holds one image's anatomical coordinates (the detector grid moved by the patient's
rotation, shift and scale) and finds the pixel window that covers an anatomical box, so local
shapes are computed on a few hundred pixels instead of the whole image.
"""

import dataclasses
import math

import numpy as np


def ramp(x: np.ndarray, width: float) -> np.ndarray:
  """Soft step: 0 for x <= -width/2, 1 for x >= width/2, linear between (cheaper than sigmoid)."""
  y = x * (1.0 / width)
  y += 0.5
  # Two in-place ufuncs: np.clip's Python wrapper costs more than the work on small windows.
  np.maximum(y, 0.0, out=y)
  return np.minimum(y, 1.0, out=y)


def smooth_polyline(points: np.ndarray, iterations: int = 2) -> np.ndarray:
  """Chaikin corner cutting; keeps the end points. points: [N, 2] -> [M, 2]."""
  pts = np.asarray(points, np.float32)
  for _ in range(iterations):
    a, b = pts[:-1], pts[1:]
    q = 0.75 * a + 0.25 * b
    r = 0.25 * a + 0.75 * b
    mid = np.stack([q, r], axis=1).reshape(-1, 2)
    pts = np.concatenate([pts[:1], mid[1:-1], pts[-1:]], axis=0)
  return pts


def polyline_distance(u: np.ndarray, v: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Distance from each (u, v) to a polyline.

  Args:
    u, v: [h, w] coordinates.
    points: [N, 2] polyline vertices (u, v), N >= 2.

  Returns:
    [h, w] float32 distances.
  """
  a = points[:-1, :, None, None]  # [n, 2, 1, 1]
  ab = (points[1:] - points[:-1])[:, :, None, None]
  pu = u[None] - a[:, 0]  # [n, h, w]
  pv = v[None] - a[:, 1]
  denom = np.maximum(ab[:, 0] ** 2 + ab[:, 1] ** 2, 1e-12)
  t = np.clip((pu * ab[:, 0] + pv * ab[:, 1]) / denom, 0.0, 1.0)
  du = pu - t * ab[:, 0]
  dv = pv - t * ab[:, 1]
  return np.sqrt(np.min(du * du + dv * dv, axis=0))


@dataclasses.dataclass
class Frame:
  """One image's anatomical coordinate grid and pixel windows.

  Attributes:
    size: image side S in pixels.
    u, v: [S, S] anatomical coordinates of each pixel centre.
    px: size of one pixel in normalised units at the patient (2 / S / scale).
    rot, du, dv, scale: the patient pose used to build u, v.
  """

  size: int
  u: np.ndarray
  v: np.ndarray
  px: float
  rot: float
  du: float
  dv: float
  scale: float

  @classmethod
  def create(cls, grid_u: np.ndarray, grid_v: np.ndarray, *, rot: float, du: float, dv: float,
             scale: float) -> "Frame":
    """Moves the detector grid [S, S] into the patient's frame."""
    c, s = np.float32(np.cos(rot) / scale), np.float32(np.sin(rot) / scale)
    gu = grid_u - np.float32(du)
    gv = grid_v - np.float32(dv)
    u = c * gu + s * gv
    v = c * gv - s * gu
    size = grid_u.shape[0]
    return cls(size=size, u=u, v=v, px=2.0 / size / scale, rot=rot, du=du, dv=dv, scale=scale)

  def window(self, u0: float, u1: float, v0: float, v1: float):
    """Pixel (rows, cols) slices covering the anatomical box [u0, u1] x [v0, v1], or None."""
    c, s = math.cos(self.rot) * self.scale, math.sin(self.rot) * self.scale
    # Image-space extent of the box's rotated corners (plain floats: this runs ~25x per image).
    iu = (c * u0 - s * v0, c * u1 - s * v0, c * u0 - s * v1, c * u1 - s * v1)
    iv = (s * u0 + c * v0, s * u1 + c * v0, s * u0 + c * v1, s * u1 + c * v1)
    half = self.size / 2.0
    c0 = max(math.floor((min(iu) + self.du + 1) * half - 0.5) - 1, 0)
    c1 = min(math.ceil((max(iu) + self.du + 1) * half - 0.5) + 2, self.size)
    r0 = max(math.floor((min(iv) + self.dv + 1) * half - 0.5) - 1, 0)
    r1 = min(math.ceil((max(iv) + self.dv + 1) * half - 0.5) + 2, self.size)
    if c0 >= c1 or r0 >= r1:
      return None
    return slice(r0, r1), slice(c0, c1)

  def line(self, layer: np.ndarray, points, width: float, amount: float,
           smooth: int = 2) -> None:
    """Adds `amount` along a (smoothed) polyline of `width` to `layer` [S, S] in place."""
    pts = np.asarray(points, np.float32)
    if smooth:
      pts = smooth_polyline(pts, smooth)
    pad = 0.5 * width + 2 * self.px
    half_width = 0.5 * max(width, self.px)
    # Split long polylines into chunks, each with its own window (keeps the work local).
    step = 6
    for i in range(0, len(pts) - 1, step):
      chunk = pts[i:i + step + 1]
      win = self.window(chunk[:, 0].min() - pad, chunk[:, 0].max() + pad,
                        chunk[:, 1].min() - pad, chunk[:, 1].max() + pad)
      if win is None:
        continue
      d = polyline_distance(self.u[win], self.v[win], chunk)
      ink = amount * ramp(half_width - d, self.px)
      np.maximum(layer[win], ink, out=layer[win])

  def ellipse(self, layer: np.ndarray, cu: float, cv: float, au: float, av: float,
              amount: float, *, tilt: float = 0.0, soft: float = 0.0, power: float = 2.0,
              combine: str = "max") -> None:
    """Draws a (tilted, super-)ellipse of semi-axes (au, av) into `layer` in place.

    Args:
      layer: [S, S] float32.
      cu, cv: centre; au, av: semi-axes; tilt: rotation (radians, clockwise on the image).
      amount: value inside.
      soft: extra edge softness in normalised units (0 = one pixel).
      power: superellipse exponent (2 = ellipse, larger = boxier).
      combine: "max" (overwrite upward) or "add".
    """
    r = max(au, av) * 1.05 + soft + 2 * self.px
    win = self.window(cu - r, cu + r, cv - r, cv + r)
    if win is None:
      return
    x = self.u[win] - cu
    y = self.v[win] - cv
    if tilt:
      c, s = np.cos(tilt), np.sin(tilt)
      x, y = c * x + s * y, c * y - s * x
    if power == 2.0:
      q = (x / au) ** 2 + (y / av) ** 2
      inside = (1.0 - np.sqrt(q)) * min(au, av)
    else:
      q = np.abs(x / au) ** power + np.abs(y / av) ** power
      inside = (1.0 - q ** (1.0 / power)) * min(au, av)
    ink = amount * ramp(inside, self.px + soft)
    if combine == "add":
      layer[win] += ink
    else:
      np.maximum(layer[win], ink, out=layer[win])
