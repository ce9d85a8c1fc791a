"""Writers of small, real image files (JPEG, PNG 8/16-bit, RGBA, palette, DICOM) for tests.

Every writer produces a file that the usual readers (PIL, pydicom) accept as-is, so a builder test
exercises the same decoding path as a user's download. Everything is deterministic: the same
arguments write the same bytes. Writers create missing parent folders and return the path written.
"""

import io
import os

import numpy as np
from pydicom import encaps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom import uid as dicom_uid
from PIL import Image

# SOP classes of plain radiographs: CR = Computed Radiography, DX = Digital X-Ray for presentation.
_SOP_CLASS = {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1"}
_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")


def chest_like(h: int, w: int, seed: int = 0, *, bits: int = 8, grain: float = 0.01) -> np.ndarray:
  """A plausible frontal chest radiograph, bone bright (MONOCHROME2 convention).

  Air outside the body is dark, the two lungs darker than the soft tissue with faint ribs, the
  mediastinum and spine bright, and a fully white burned-in marker square near the top-left corner
  (so a flip or transpose is visible). `seed` jitters the anatomy and the film grain.

  Args:
    h: height in pixels.
    w: width in pixels.
    seed: makes the image deterministic; different seeds give different images.
    bits: 8 -> uint8 in [0, 255]; 12 or 16 -> uint16 in [0, 2**bits - 1].
    grain: standard deviation of the film grain, as a fraction of the full range.

  Returns:
    uint8 or uint16 [h, w].
  """
  if bits not in (8, 12, 16):
    raise ValueError(f"bits must be 8, 12 or 16, got {bits}")
  rng = np.random.default_rng(seed)
  jx, jy, jr = rng.uniform(-0.02, 0.02, size=3)
  yy = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]  # [h, 1]
  xx = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]  # [1, w]

  def inside(cx, cy, rx, ry):  # soft-edged ellipse mask in [0, 1], [h, w]
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return 1.0 / (1.0 + np.exp((r - 1.0) / 0.03))

  img = 0.06 + 0.40 * inside(0.5, 0.6, 0.47, 0.62)  # air, then the soft tissue of the body
  diaphragm = 1.0 / (1.0 + np.exp((yy - 0.72 - 0.04 * np.cos(6 * (xx - 0.5))) / 0.01))
  ribs = 0.10 * np.clip(np.sin(2 * np.pi * (9 * yy + 1.5 * np.abs(xx - 0.5))), 0, 1) ** 2
  for side in (-1, 1):
    lung = inside(0.5 + side * (0.2 + jx), 0.45 + jy, 0.15 + jr, 0.32) * diaphragm
    img = img - lung * (0.28 - ribs)
  mediastinum = np.exp(-((xx - 0.5) / 0.07) ** 4) * (yy > 0.12)
  img = np.maximum(img, 0.72 * mediastinum)
  img = np.maximum(img, 0.85 * np.exp(-((xx - 0.5) / 0.025) ** 2))  # spine
  # Film grain, spatially correlated over ~2 pixels like detector noise (white noise would make
  # the JPEGs larger and slower to decode than real ones).
  noise = rng.normal(0.0, grain, size=(h + 1, w + 1)).astype(np.float32)
  img = img + (noise[:-1, :-1] + noise[1:, :-1] + noise[:-1, 1:] + noise[1:, 1:]) / 2
  y0, y1, x0, x1 = int(0.04 * h), int(0.1 * h) + 1, int(0.04 * w), int(0.1 * w) + 1
  img[y0:y1, x0:x1] = 1.0  # burned-in side marker
  top = 2 ** bits - 1
  return np.rint(np.clip(img, 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else np.uint16)


def _prepare(path) -> str:
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return path


def _require(array: np.ndarray, dtype, ndims, what: str) -> np.ndarray:
  array = np.asarray(array)
  if array.dtype != dtype or array.ndim not in ndims:
    raise ValueError(f"{what} needs a {np.dtype(dtype).name} array with {ndims} dims, got "
                     f"{array.dtype} {array.shape}")
  return array


def write_jpeg(path, array: np.ndarray, *, quality: int = 95) -> str:
  """Writes uint8 [H, W] (grey) or [H, W, 3] (RGB) as a baseline JPEG."""
  array = _require(array, np.uint8, (2, 3), "write_jpeg")
  path = _prepare(path)
  Image.fromarray(array).save(path, format="JPEG", quality=quality)
  return path


def write_png(path, array: np.ndarray) -> str:
  """Writes uint8 [H, W] (8-bit grey, mode L) or [H, W, 3] (RGB) as a PNG."""
  array = _require(array, np.uint8, (2, 3), "write_png")
  path = _prepare(path)
  Image.fromarray(array).save(path, format="PNG")
  return path


def write_png16(path, array: np.ndarray) -> str:
  """Writes uint16 [H, W] as a 16-bit greyscale PNG (PIL mode I;16)."""
  array = _require(array, np.uint16, (2,), "write_png16")
  path = _prepare(path)
  Image.fromarray(array).save(path, format="PNG")
  return path


def write_rgba_png(path, array: np.ndarray, alpha=255) -> str:
  """Writes an RGBA PNG (like the few RGBA files in ChestX-ray14).

  Args:
    path: output file.
    array: uint8 [H, W] (grey, copied into R, G and B) or [H, W, 3] (RGB).
    alpha: the alpha channel, a scalar or uint8 [H, W]; 255 (fully opaque) as in ChestX-ray14.

  Returns:
    The path written.
  """
  array = _require(array, np.uint8, (2, 3), "write_rgba_png")
  rgb = np.repeat(array[..., None], 3, axis=-1) if array.ndim == 2 else array  # [H, W, 3]
  a = np.broadcast_to(np.asarray(alpha, dtype=np.uint8), rgb.shape[:2])  # [H, W]
  path = _prepare(path)
  Image.fromarray(np.dstack([rgb, a]), mode="RGBA").save(path, format="PNG")
  return path


def write_palette_png(path, array: np.ndarray) -> str:
  """Writes uint8 [H, W] grey as a palette (mode P) PNG whose palette is a reversed grey ramp.

  Index i shows grey 255 - i, so a reader that returns the indices instead of the colours gets an
  inverted image.
  """
  array = _require(array, np.uint8, (2,), "write_palette_png")
  image = Image.fromarray(255 - array, mode="L").convert("P")  # indices = 255 - grey
  ramp = np.arange(255, -1, -1, dtype=np.uint8)  # [256]
  image.putpalette(np.repeat(ramp[:, None], 3, axis=1).ravel().tolist())
  path = _prepare(path)
  image.save(path, format="PNG")
  return path


def write_truncated(path, source) -> str:
  """Writes the first half of `source` (a file path or bytes) to `path`: a cut-off download."""
  data = source if isinstance(source, bytes) else open(os.fspath(source), "rb").read()
  path = _prepare(path)
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  return path


def write_dicom(path, array: np.ndarray, *, bits_stored: int = 16, photometric: str = "MONOCHROME2",
                window: tuple[float, float] | None = None,
                rescale: tuple[float, float] | None = None,
                voi_lut: tuple[int, np.ndarray] | None = None, compressed: str | None = None,
                signed: bool = False, preamble: bool = True, modality: str = "DX",
                view_position: str = "PA", patient_id: str = "p0001",
                study_uid: str | None = None, series_uid: str | None = None,
                sop_uid: str | None = None) -> str:
  """Writes a chest radiograph DICOM with pydicom.

  Args:
    path: output file.
    array: the stored pixel values, [H, W] or [frames, H, W] (multi-frame); integers within the
      range of `bits_stored` and `signed` (uint8 [0, 255] for 8 bits and JPEG baseline).
    bits_stored: 8, 12 or 16 (BitsAllocated is 8 for 8 bits, else 16; HighBit = bits_stored - 1).
    photometric: "MONOCHROME1" (low values white) or "MONOCHROME2" (low values black).
    window: (WindowCenter, WindowWidth) in output units of the rescale, or None.
    rescale: (RescaleSlope, RescaleIntercept), or None.
    voi_lut: (first mapped value, uint16 table [N]) for a VOILUTSequence with 16-bit entries.
    compressed: None (explicit VR little endian) or "jpeg_baseline" (JPEG Baseline Process 1,
      transfer syntax 1.2.840.10008.1.2.4.50, as in the RSNA and SIIM downloads; needs 8 bits).
    signed: PixelRepresentation 1 (two's complement) instead of 0.
    preamble: False writes the bare dataset (implicit VR little endian) without the 128-byte
      preamble, "DICM" and file meta, as some old archives do.
    modality: "CR" or "DX".
    view_position: ViewPosition, e.g. "PA", "AP", "LL".
    patient_id: PatientID.
    study_uid: StudyInstanceUID; derived from the file name when None.
    series_uid: SeriesInstanceUID; derived from the file name when None.
    sop_uid: SOPInstanceUID; derived from the file name when None.

  Returns:
    The path written.
  """
  array = np.asarray(array)
  if (bits_stored not in (8, 12, 16) or photometric not in _PHOTOMETRICS
      or modality not in _SOP_CLASS):
    raise ValueError(f"bits_stored must be 8/12/16, photometric one of {_PHOTOMETRICS}, modality "
                     f"CR or DX; got {bits_stored}, {photometric}, {modality}")
  if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f"array must be integer [H, W] or [frames, H, W], got {array.dtype} "
                     f"{array.shape}")
  lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0,
                                                                                 2**bits_stored - 1)
  if array.min() < lo or array.max() > hi:
    raise ValueError(f"pixel values {array.min()}..{array.max()} do not fit {bits_stored} "
                     f"{'signed' if signed else 'unsigned'} bits [{lo}, {hi}]")
  if compressed not in (None, "jpeg_baseline"):
    raise ValueError(f"compressed must be None or 'jpeg_baseline', got {compressed!r}")
  if compressed and (bits_stored != 8 or signed or not preamble):
    raise ValueError("JPEG baseline needs bits_stored=8, unsigned values and the file preamble")
  path = _prepare(path)
  name = os.path.basename(path)
  frames = array if array.ndim == 3 else array[None]  # [F, H, W]

  ds = Dataset()
  ds.SOPClassUID = _SOP_CLASS[modality]
  ds.SOPInstanceUID = sop_uid or dicom_uid.generate_uid(entropy_srcs=[name, "sop"])
  ds.StudyInstanceUID = study_uid or dicom_uid.generate_uid(entropy_srcs=[name, "study"])
  ds.SeriesInstanceUID = series_uid or dicom_uid.generate_uid(entropy_srcs=[name, "series"])
  ds.PatientID = patient_id
  ds.Modality = modality
  ds.ViewPosition = view_position
  ds.BodyPartExamined = "CHEST"
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.Rows, ds.Columns = (int(n) for n in frames.shape[1:])
  if array.ndim == 3:
    ds.NumberOfFrames = frames.shape[0]
  ds.BitsAllocated = 8 if bits_stored == 8 else 16
  ds.BitsStored = bits_stored
  ds.HighBit = bits_stored - 1
  ds.PixelRepresentation = int(signed)
  if rescale is not None:
    ds.RescaleSlope, ds.RescaleIntercept = (float(v) for v in rescale)
  if window is not None:
    ds.WindowCenter, ds.WindowWidth = (float(v) for v in window)
  if voi_lut is not None:
    first, table = voi_lut
    item = Dataset()
    table = np.asarray(table, dtype="<u2")  # [N]
    item.add_new("LUTDescriptor", "US", [len(table) % 65536, int(first), 16])
    item.add_new("LUTData", "OW", table.tobytes())
    item.LUTExplanation = "test VOI LUT"
    ds.VOILUTSequence = [item]

  if compressed == "jpeg_baseline":
    jpegs = []
    for frame in frames:
      buf = io.BytesIO()
      Image.fromarray(frame.astype(np.uint8)).save(buf, format="JPEG", quality=95)
      jpegs.append(buf.getvalue())
    ds.PixelData = encaps.encapsulate(jpegs)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.LossyImageCompression = "01"
    syntax = dicom_uid.JPEGBaseline8Bit
  else:
    dtype = "u1" if bits_stored == 8 else ("<i2" if signed else "<u2")
    data = frames.astype(dtype).tobytes()
    ds.PixelData = data + b"\0" * (len(data) % 2)  # DICOM values have even length
    ds["PixelData"].VR = "OB" if bits_stored == 8 else "OW"
    syntax = dicom_uid.ExplicitVRLittleEndian

  if preamble:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)
  else:
    ds.save_as(path, implicit_vr=True, little_endian=True)
  return path

