"""Numpy rendering of SynthCXR radiographs.

A `Renderer` is built once per image size: it holds the detector grid and two banks of textures
made from a fixed seed (pulmonary vessel trees and smooth noise), so per-image work is a few dozen
vectorised array operations. Images are grayscale uint8 [S, S] (air dark, bone and metal bright).
"""

import numpy as np

from input_pipeline.synthcxr import anatomy as anatomy_lib
from input_pipeline.synthcxr import devices as devices_lib
from input_pipeline.synthcxr import draw
from input_pipeline.synthcxr import findings as findings_lib
from input_pipeline.synthcxr import pathology
from input_pipeline.synthcxr import scene

Anatomy = anatomy_lib.Anatomy
Study = findings_lib.Study

AIR = 0.36  # density removed by fully aerated lung
VESSEL = 0.2  # density of the largest vessels
_BANK_SEED = 20250611  # textures are fixed: an example depends only on (seed, split, index)
_NUM_VESSEL = 6
_NUM_TEXTURE = 6


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
  """Gaussian-filtered white noise [size, size], zero mean, unit std (FFT filter, periodic)."""
  noise = rng.standard_normal((size, size))
  freq = np.fft.fftfreq(size)
  gauss = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
  field = np.fft.ifft2(np.fft.fft2(noise) * gauss).real
  field = (field - field.mean()) / (field.std() + 1e-8)
  return field.astype(np.float32)


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
  """Gaussian blur through the FFT (periodic borders; the canvases are empty there)."""
  fy = np.fft.fftfreq(image.shape[0])[:, None]
  fx = np.fft.fftfreq(image.shape[1])[None, :]
  gauss = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (fy ** 2 + fx ** 2))
  return np.fft.ifft2(np.fft.fft2(image) * gauss).real.astype(np.float32)


def _vessel_tree(frame: draw.Frame, layer: np.ndarray, rng: np.random.Generator,
                 sign: float) -> None:
  """Branching pulmonary vessels from one hilum into `layer` (lateral direction = sign)."""
  stack = []
  hilum = np.array([sign * 0.17, -0.12], np.float32)
  for angle in (-1.2, -0.6, -0.1, 0.4, 0.9, 1.35):  # radians below horizontal, lateral
    angle += rng.uniform(-0.15, 0.15)
    stack.append((hilum, angle, rng.uniform(0.14, 0.2), 0.022, 0))
  while stack:
    start, angle, length, width, depth = stack.pop()
    # A slightly curved segment: three points.
    bend = rng.uniform(-0.25, 0.25)
    mid = start + 0.5 * length * np.array([sign * np.cos(angle), np.sin(angle)], np.float32)
    end_angle = angle + bend
    end = mid + 0.5 * length * np.array([sign * np.cos(end_angle), np.sin(end_angle)], np.float32)
    amount = min(1.0, (width / 0.022) ** 0.7)
    frame.line(layer, np.stack([start, mid, end]), max(width, frame.px), amount, smooth=0)
    if depth < 4:
      for turn in (-1, 1):
        stack.append((end, end_angle + turn * rng.uniform(0.25, 0.55), length * 0.72,
                      width * 0.68, depth + 1))


class Renderer:
  """Draws `Study` ground truth as a radiograph of a fixed size.

  Attributes:
    size: image side S.
    num_vessel, num_texture: sizes of the texture banks (for `anatomy.sample_anatomy`).
  """

  def __init__(self, size: int):
    if size < 32:
      raise ValueError(f"SynthCXR image_size must be >= 32, got {size}")
    self.size = size
    self.num_vessel, self.num_texture = _NUM_VESSEL, _NUM_TEXTURE
    centres = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    self._grid_v, self._grid_u = np.meshgrid(centres, centres, indexing="ij")
    rng = np.random.default_rng(_BANK_SEED)
    # Vessel canvases carry a margin so they can follow the patient's shift.
    self._margin = int(np.ceil(0.06 * size)) + 1
    big = size + 2 * self._margin
    cb = ((np.arange(big, dtype=np.float32) + 0.5) * (2.0 / big) - 1.0).astype(np.float32)
    bv, bu = np.meshgrid(cb, cb, indexing="ij")
    bank_frame = draw.Frame.create(bu, bv, rot=0.0, du=0.0, dv=0.0, scale=size / big)
    self._vessels = []
    for _ in range(self.num_vessel):
      layer = np.zeros((big, big), np.float32)
      for sign in (-1.0, 1.0):
        _vessel_tree(bank_frame, layer, rng, sign)
      self._vessels.append(_blur(layer, 0.5 + 0.004 * size))
    self._textures = [_smooth_noise(rng, 2 * size, 0.025 * size) for _ in range(self.num_texture)]

  def sample_anatomy(self, rng: np.random.Generator, view: str) -> Anatomy:
    return anatomy_lib.sample_anatomy(rng, view, num_vessel=self.num_vessel,
                                      num_texture=self.num_texture)

  def render(self, anat: Anatomy, study: Study, rng: np.random.Generator, *,
             ett_cm: int = 4, return_canvas: bool = False):
    """Renders one radiograph.

    Args:
      anat: patient anatomy and exposure.
      study: findings and devices to draw.
      rng: randomness of the findings' shapes and of the noise. Noise and every finding draw from
        their own child generators, so adding a finding does not change the rest of the image.
      ett_cm: endotracheal tube tip height above the carina (as in the report).
      return_canvas: also return the scene.Canvas (layers and geometry, for tests).

    Returns:
      uint8 [S, S] (and the canvas if requested).
    """
    # Child generators keyed by purpose (noise, devices, finding kind): adding a finding leaves
    # the noise and the other findings unchanged.
    base = int(rng.integers(1 << 62))
    kinds = list(findings_lib.KIND_CATEGORY)
    finding_rngs = {f.kind: np.random.default_rng([base, 2 + kinds.index(f.kind)])
                    for f in study.findings}
    frame = draw.Frame.create(self._grid_u, self._grid_v, rot=anat.rot, du=anat.du, dv=anat.dv,
                              scale=anat.scale)
    ctr, med_w, fracture = anat.ctr, anat.med_w, None
    for f in study.findings:
      frng = finding_rngs[f.kind]
      level = f.severity if f.certain else "uncertain"
      if f.kind == "cardiomegaly":
        ctr = float(frng.uniform(*pathology.CTR_RANGE[level]))
      elif f.kind == "mediastinum":
        med_w = float(frng.uniform(*pathology.MED_W_RANGE[level]))
      elif f.kind == "fracture":
        fracture = scene.RibFracture(
            sign=scene.SIGNS[scene.SIDES.index(f.side)], rib=f.rib,
            x=float(frng.uniform(0.36, 0.5)),
            step=0.0 if not f.certain or f.severity == "healing" else float(
                frng.uniform(0.05, 0.07)),
            gap=0.0 if f.severity == "healing" else 0.04,
            callus=0.16 if f.severity == "healing" else 0.0)
    c = scene.Canvas.create(frame, anat, ctr=ctr, med_w=med_w)
    scene.draw_soft_tissue(c)
    scene.draw_bones(c, fracture)
    size = self.size
    oy, ox = anat.tex_off
    oy, ox = oy % size, ox % size
    texture = self._textures[anat.texture_idx][oy:oy + size, ox:ox + size]
    for f in study.findings:
      pathology.draw_finding(c, f, finding_rngs[f.kind], texture)
    if study.devices:
      devices_lib.draw_devices(c, study.devices, np.random.default_rng([base, 1]), ett_cm=ett_cm)
    # Vessels follow the patient's shift (rotation and scale are small enough to ignore).
    m = self._margin
    sr = int(np.clip(round(anat.dv * size / 2), -m, m))
    sc = int(np.clip(round(anat.du * size / 2), -m, m))
    vessels = self._vessels[anat.vessel_idx][m - sr:m - sr + size, m - sc:m - sc + size]
    air = c.lung * (1.0 - c.opac)
    density = c.soft + c.bone + c.device
    density -= AIR * air * (1.0 + 0.3 * c.lucent)
    density += VESSEL * vessels * air * (1.0 - c.lucent)
    image = 1.0 - np.exp(-anat.gain * density)
    image *= 1.0 + anat.grad_u * self._grid_u + anat.grad_v * self._grid_v
    noise = np.random.default_rng([base, 0]).standard_normal(image.shape, dtype=np.float32)
    image += anat.noise * noise
    out = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return (out, c) if return_canvas else out
