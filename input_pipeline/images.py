"""One image file of any chest X-ray download -> one 8-bit greyscale image, longest side resized.

Every TFDS builder stores its images through `load_grayscale` (or `decode_grayscale` for bytes
read from an archive) and `encode_png`, so all datasets share one pixel handling:

* Dispatch on the content, not the name: JPEG and PNG by their magic bytes, DICOM by the "DICM"
  preamble or a .dcm/.dicom name (then read with pydicom's `force`), anything else PIL opens, and
  as a last resort a DICOM without preamble.
* JPEG: decoded at 1/2, 1/4 or 1/8 scale in the DCT (PIL `draft`) when the image is large enough,
  and only the luma channel. A 2500x3000 MIMIC JPEG then decodes at 625x750.
* 8-bit L as stored. RGB/RGBA/LA/P/CMYK -> ITU-R 601 luma (PIL's convert("L")). Alpha is ignored,
  not composited: compositing onto black would darken anatomy wherever alpha < 255, while ignoring
  it keeps the stored pixels; ChestX-ray14's RGBA files are fully opaque, so both agree there. A
  non-opaque alpha is noted in `info["notes"]`.
* 16-bit and 32-bit PNG/TIFF ("I;16", "I;16B", "I", "F"): linear min-max of the stored values to
  [0, 255] (windowing "minmax"). Not the bit depth's range: PNG cannot say how many of the 16 bits
  are used (sBIT is rarely written) and 12-bit data in 16-bit files is common, which the full
  range would turn nearly black. Not percentiles: a PNG is already display-processed (windowed,
  bone bright) by whoever exported it, and a linear stretch keeps that contrast without clipping.
* DICOM (pydicom 3): Modality LUT (RescaleSlope/Intercept or the LUT sequence), then the VOI LUT
  sequence if present ("voi_lut"), else WindowCenter/Width with its VOILUTFunction ("window"),
  mapped from the output range of that LUT/window to [0, 1]. Without either: 8-bit unsigned data
  without rescale as stored ("none"), anything else linearly between the 0.5 and 99.5 percentiles
  ("percentile"). MONOCHROME1 is inverted last, so bone is bright in every output. Multi-frame:
  frame 0. Compressed transfer syntaxes decode through pydicom's plugins (Pillow, pylibjpeg).
* Resize once: the longest side to `max_size` (never up), PIL LANCZOS with `reducing_gap` (an
  integer box reduction first, then LANCZOS over the rest). DICOM and 16-bit images are windowed
  to float at full resolution and resized as float, so they are rounded to 8 bits only once.

Unreadable input raises `ImageError`, a `UserError` whose one-line message names the file.
"""

import io
import os
import time
import zlib

import numpy as np
import pydicom
from pydicom import pixels as dicom_pixels
from pydicom import uid as dicom_uid
from PIL import Image, UnidentifiedImageError

from clipmed.errors import UserError

DEFAULT_MAX_SIZE = 512
# Box-reduce by an integer factor while the remaining scale stays >= 2, then LANCZOS. Measured on
# a 2500x3000 chest_like -> 427x512: 13 ms instead of 35 ms (8-bit), mean |difference| to exact
# LANCZOS 0.2 grey levels (at most 6, on the sharp edge of the burned-in marker).
REDUCING_GAP = 2.0
# zlib settings of the stored PNGs. Measured on 512x427 chest_like outputs (CPU ms per encode, this
# 2-core Xeon): level 1 default strategy 88 KB in 7.6 ms, level 6 76 KB in 36 ms, level 9 75 KB in
# 124 ms; level 1 with the run-length strategy (Z_RLE) 68 KB in 6.8 ms. After PNG's row filters an
# X-ray has few long repeats for LZ77 to find, so Z_RLE is both the fastest and the smallest, and it
# still packs flat borders (69 KB with a black border, Z_HUFFMAN_ONLY 75 KB).
PNG_COMPRESS_LEVEL = 1
PNG_COMPRESS_TYPE = zlib.Z_RLE
# Percentiles that bound the linear scaling of DICOMs without VOI LUT or window.
PERCENTILES = (0.5, 99.5)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DICOM_SUFFIXES = (".dcm", ".dicom")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOR_DICOM = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_EXIF_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                   6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


class ImageError(UserError, ValueError):
  """An image file is missing, truncated, corrupt or in a format clipmed cannot read.

  Attributes:
    path: the file (or the name given to `decode_grayscale`).
    reason: what is wrong, e.g. "image file is truncated".
  """

  def __init__(self, path, reason: str):
    self.path, self.reason = os.fspath(path), " ".join(str(reason).split())
    super().__init__(f"cannot read image {self.path}: {self.reason}; re-download or replace the "
                     "file, or leave it out of the dataset")

  def __reduce__(self):  # picklable, so worker processes can send it back
    return type(self), (self.path, self.reason)


def target_size(height: int, width: int, max_size: int) -> tuple[int, int]:
  """(height, width) with the longest side min(max_size, longest side), aspect ratio kept."""
  if max_size < 1:
    raise ValueError(f"max_size must be a positive number of pixels, got {max_size}")
  longest = max(height, width)
  if longest <= max_size:
    return height, width
  if height >= width:
    return max_size, max(1, round(width * max_size / height))
  return max(1, round(height * max_size / width)), max_size


def load_grayscale(path, *, max_size: int = DEFAULT_MAX_SIZE) -> tuple[np.ndarray, dict]:
  """Reads an image file (JPEG, PNG, DICOM, or anything PIL opens) as resized 8-bit grey.

  Args:
    path: the file.
    max_size: the longest side of the output (never upscaled).

  Returns:
    (image, info): uint8 [H, W] with max(H, W) == min(max_size, original longest side), bone
    bright; info = {"format", "original_size": (H, W), "bit_depth", "photometric", "windowing":
    "voi_lut" | "window" | "percentile" | "minmax" | "none", "inverted": bool, "notes": [str]}.

  Raises:
    ImageError: missing, unreadable, truncated, corrupt or unsupported file.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise ImageError(path, "file not found") from None
  except IsADirectoryError:
    raise ImageError(path, "is a directory, not an image file") from None
  except OSError as e:
    raise ImageError(path, f"cannot read the file ({e.strerror})") from e
  return decode_grayscale(data, max_size=max_size, name=os.fspath(path))


def decode_grayscale(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE,
                     name: str = "<bytes>") -> tuple[np.ndarray, dict]:
  """`load_grayscale` for the bytes of a file (e.g. a member of a zip); `name` is for errors."""
  target_size(1, 1, max_size)  # validates max_size before any work
  if not data:
    raise ImageError(name, "file is empty")
  if data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC):
    try:
      return _decode_pil(data, name, max_size)
    except UnidentifiedImageError as e:
      raise ImageError(name, "image header is corrupt or truncated (starts like a "
                       f"{'JPEG' if data.startswith(_JPEG_MAGIC) else 'PNG'})") from e
  if data[128:132] == b"DICM":
    return _decode_dicom(data, name, max_size, force=False)
  if name.lower().endswith(_DICOM_SUFFIXES):
    return _decode_dicom(data, name, max_size, force=True)
  try:
    return _decode_pil(data, name, max_size)
  except UnidentifiedImageError:
    pass
  try:
    return _decode_dicom(data, name, max_size, force=True)
  except ImageError as e:
    if e.reason != "not a DICOM file":
      raise
  raise ImageError(name, "not an image format clipmed reads (JPEG, PNG, DICOM or another "
                   "format PIL opens)")


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
  """PIL image ("L" or "F") -> the same mode at `size` (height, width)."""
  if (image.height, image.width) == size:
    return image
  return image.resize((size[1], size[0]), Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def _to_uint8(unit: Image.Image) -> np.ndarray:
  """Float image in [0, 1] (mode "F") -> uint8 [H, W], rounded."""
  return np.rint(np.clip(np.asarray(unit, dtype=np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def _info(fmt, original, bit_depth, photometric, windowing, inverted=False, notes=()) -> dict:
  return {"format": fmt, "original_size": tuple(original), "bit_depth": int(bit_depth),
          "photometric": photometric, "windowing": windowing, "inverted": inverted,
          "notes": list(notes)}


def _decode_pil(data: bytes, name: str, max_size: int) -> tuple[np.ndarray, dict]:
  """JPEG / PNG / anything PIL opens -> (uint8 [H, W], info). Raises UnidentifiedImageError."""
  notes = []
  try:
    image = Image.open(io.BytesIO(data))
    fmt, mode, original = (image.format or "unknown").lower(), image.mode, (image.height,
                                                                            image.width)
    size = target_size(*original, max_size)
    if image.format == "JPEG":
      # DCT scaling: PIL picks the largest of 1/8, 1/4, 1/2 that keeps both sides >= size.
      image.draft("L", (size[1], size[0]))
    orientation = image.getexif().get(0x0112, 1) if image.format in ("JPEG", "TIFF") else 1
    image.load()
    if mode in ("RGBA", "LA", "PA") and image.getchannel("A").getextrema()[0] < 255:
      notes.append("alpha channel not fully opaque; ignored")
    if mode == "P" and "transparency" in image.info:
      notes.append("palette transparency ignored")
    if mode.startswith("I") or mode == "F":  # 16/32-bit grey: min-max of the stored values
      values = np.asarray(image, dtype=np.float32)  # [H, W]
      lo, hi = float(values.min()), float(values.max())
      unit = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
      out = _to_uint8(_resize(Image.fromarray(unit), size))
      bit_depth = 16 if mode.startswith("I;16") or fmt == "png" else 32  # PNG has no 32-bit grey
      windowing = "minmax"
    else:
      if image.mode == "LA":
        image = image.getchannel("L")
      gray = image if image.mode == "L" else image.convert("L")
      out = np.asarray(_resize(gray, size))
      bit_depth, windowing = (1 if mode == "1" else 8), "none"
  except UnidentifiedImageError:
    raise
  except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as e:
    reason = "image file is truncated" if "truncated" in str(e) else f"corrupt image data ({e})"
    raise ImageError(name, reason) from e
  if orientation in _EXIF_TRANSPOSE:
    out = np.asarray(Image.fromarray(out).transpose(_EXIF_TRANSPOSE[orientation]))
    notes.append(f"EXIF orientation {orientation} applied")
  return out, _info(fmt, original, bit_depth, mode, windowing, notes=notes)


def _read_dicom(data: bytes, name: str, force: bool) -> pydicom.Dataset:
  """Parses a DICOM; raises ImageError unless it has pixel data pydicom can locate."""
  try:
    ds = pydicom.dcmread(io.BytesIO(data), force=force)
  except Exception as e:  # pylint: disable=broad-except
    # pydicom raises many types (InvalidDicomError, EOFError, struct.error...) on non-DICOM input.
    raise ImageError(name, "not a DICOM file") from e
  if "TransferSyntaxUID" not in ds.get("file_meta", {}):
    # Without file meta pydicom guessed the encoding; every image IOD starts with group 0008.
    first = next(iter(ds.keys()), None)
    if first is None or first.group not in (0x0002, 0x0008):
      raise ImageError(name, "not a DICOM file")
    implicit, little = ds.original_encoding
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (dicom_uid.ImplicitVRLittleEndian if implicit else
                                      dicom_uid.ExplicitVRLittleEndian if little else
                                      dicom_uid.ExplicitVRBigEndian)
  if "PixelData" not in ds:
    # pydicom drops a Pixel Data element that the end of the file cuts off.
    raise ImageError(name, "DICOM file is truncated (its pixel data is cut off)"
                     if _PIXEL_DATA_TAG in data else "DICOM has no pixel data")
  return ds


def _first(value):
  """The first of a multi-valued DICOM element (e.g. several windows), else the value."""
  return value[0] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value


def _voi(values: np.ndarray, ds: pydicom.Dataset, notes: list) -> tuple[np.ndarray, str]:
  """Modality-LUT output [H, W] -> ([H, W] float32 in [0, 1], windowing name)."""
  lut_items = ds.get("VOILUTSequence") or []
  has_lut = bool(lut_items) and "LUTDescriptor" in lut_items[0] and "LUTData" in lut_items[0]
  has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
  if has_lut or has_window:
    try:
      if has_lut:
        # A VOI LUT indexes by integer; its output range is that of its own entries.
        entries, first_mapped = (int(v) for v in lut_items[0].LUTDescriptor[:2])
        probe = np.arange(first_mapped, first_mapped + (entries or 65536), dtype=np.int64)
        values = np.clip(np.rint(values), probe[0], probe[-1]).astype(np.int64)
      else:
        # Far outside any window, LINEAR and SIGMOID both reach their output extremes.
        probe = np.array([-1e30, 1e30])
      with np.errstate(over="ignore"):
        ends = dicom_pixels.apply_voi_lut(probe, ds, prefer_lut=True)
        lo, hi = float(np.min(ends)), float(np.max(ends))
        if hi > lo:
          out = dicom_pixels.apply_voi_lut(values, ds, prefer_lut=True)
          unit = (out.astype(np.float32) - lo) / (hi - lo)
          return unit, ("voi_lut" if has_lut else "window")
      notes.append("VOI LUT / window has a constant output; used percentiles")
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, NotImplementedError) as e:
      notes.append(f"VOI LUT / window unusable ({e}); used percentiles")
  bits = int(ds.get("BitsStored") or 8)
  rescale = (float(_first(ds.get("RescaleSlope", 1))), float(_first(ds.get("RescaleIntercept", 0))))
  if bits <= 8 and not ds.get("PixelRepresentation") and not ds.get("ModalityLUTSequence") and (
      rescale == (1.0, 0.0)):
    return values.astype(np.float32) / (2**bits - 1), "none"  # already display-ready 8-bit
  lo, hi = np.percentile(values, PERCENTILES)
  windowing = "percentile"
  if hi <= lo:  # e.g. a mostly constant image
    lo, hi, windowing = values.min(), values.max(), "minmax"
  if hi <= lo:
    return np.zeros(values.shape, np.float32), windowing
  return np.clip((values.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0), windowing


def _decode_dicom(data: bytes, name: str, max_size: int, *, force: bool) -> tuple[np.ndarray, dict]:
  """DICOM bytes -> (uint8 [H, W], info); see the module docstring for the steps."""
  ds = _read_dicom(data, name, force)
  photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
  syntax = ds.file_meta.TransferSyntaxUID
  notes = [f"transfer syntax: {syntax.name}"] if syntax.is_compressed else []
  frames = int(ds.get("NumberOfFrames") or 1)
  if frames > 1:
    notes.append(f"first of {frames} frames")
  try:
    stored = dicom_pixels.pixel_array(ds, index=0)  # [H, W] or [H, W, 3]
  except Exception as e:  # pylint: disable=broad-except
    # Decoders raise many types; the message says what is wrong or which plugin to install.
    if "less than expected" in str(e):
      raise ImageError(name, "DICOM file is truncated (less pixel data than Rows x Columns "
                       "needs)") from e
    raise ImageError(name, f"cannot decode the DICOM pixel data ({type(e).__name__}: {e})") from e
  bits = int(ds.get("BitsStored") or 8)
  if photometric in _COLOR_DICOM and stored.ndim == 3:  # pydicom returns RGB; take the luma
    luma = stored[..., :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])  # [H, W]
    unit, windowing = luma / (2**bits - 1), "none"
  elif photometric in _MONOCHROME and stored.ndim == 2:
    for keyword in ("RescaleSlope", "RescaleIntercept"):
      if keyword in ds and ds[keyword].value in (None, ""):  # seen in the wild; means identity
        del ds[keyword]
        notes.append(f"empty {keyword} ignored")
    unit, windowing = _voi(dicom_pixels.apply_modality_lut(stored, ds), ds, notes)
  else:
    raise ImageError(name, f"unsupported DICOM photometric interpretation {photometric} with "
                     f"pixel array shape {stored.shape}")
  inverted = photometric == "MONOCHROME1"
  if inverted:
    unit = 1.0 - unit
  original = stored.shape[:2]
  out = _to_uint8(_resize(Image.fromarray(unit.astype(np.float32)), target_size(*original,
                                                                                max_size)))
  return out, _info("dicom", original, bits, photometric, windowing, inverted, notes)


def encode_png(image: np.ndarray) -> bytes:
  """uint8 [H, W] -> PNG bytes (8-bit grey; zlib PNG_COMPRESS_LEVEL and PNG_COMPRESS_TYPE)."""
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 2:
    raise ValueError(f"encode_png needs uint8 [H, W], got {image.dtype} {image.shape}")
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL,
                             compress_type=PNG_COMPRESS_TYPE)
  return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
  """PNG bytes written by `encode_png` -> uint8 [H, W]."""
  image = Image.open(io.BytesIO(data))
  if image.format != "PNG" or image.mode != "L":
    raise ValueError(f"decode_png expects an 8-bit grey PNG, got {image.format} {image.mode}")
  return np.asarray(image)


def measure_speed(path, max_size: int = DEFAULT_MAX_SIZE, repeat: int = 20) -> dict:
  """Times read + decode + resize + PNG encode of one file, as a builder does it.

  Args:
    path: the image file.
    max_size: as in `load_grayscale`.
    repeat: timed runs after one warm-up run.

  Returns:
    {"images_per_s": mean wall-clock rate, "best_images_per_s": rate of the fastest run,
    "cpu_images_per_s": rate in this process's CPU time (what one core does, less sensitive to
    other processes on a shared machine), "input_size": (H, W), "output_size": (h, w),
    "png_bytes": size of the encoded output}.
  """
  image, info = load_grayscale(path, max_size=max_size)
  png = encode_png(image)
  times = []
  cpu_start = time.process_time()
  for _ in range(repeat):
    start = time.perf_counter()
    encode_png(load_grayscale(path, max_size=max_size)[0])
    times.append(time.perf_counter() - start)
  cpu = time.process_time() - cpu_start
  return {"images_per_s": len(times) / sum(times), "best_images_per_s": 1.0 / min(times),
          "cpu_images_per_s": len(times) / max(cpu, 1e-9), "input_size": info["original_size"],
          "output_size": image.shape, "png_bytes": len(png)}
