"""Per-example transforms for chest X-ray image-report pairs.

Images go through one PIL affine warp that combines the random resized crop, the rotation and the
resize to the model's input size (a single C pass over the pixels), then brightness/contrast jitter,
/255 and (x - mean) / std in numpy. Reports are tokenised with the Rust `tokenizers` backend of a
transformers fast tokenizer, configured once for fixed-length padding and truncation.

The example transforms (`TrainTransform`, `EvalTransform`) are plain picklable objects so Grain can
ship them to worker processes; all randomness comes from the per-element generator Grain passes in.

The training text is config.data.text_field ("report", the original, or "report_clean"). When the
pipeline asks for them, examples also carry the hard negative and the report graphs
(input_pipeline/extras.py); these use no randomness, so the other fields do not change.
"""

import dataclasses
import io
import math
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np
import tokenizers
from PIL import Image, UnidentifiedImageError

from clipmed import batch as batch_lib
from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import extras

# Dataset fields a report text may be trained on (config.data.text_field).
TEXT_FIELDS = ("report", "report_clean")


class ImageDecodeError(errors.DataError):
  """An example's image bytes could not be decoded."""


as_text = extras.as_text  # bytes / str / 0-d array text fields -> str


def decode_image(encoded: Any, *, study_id: str, split: str) -> np.ndarray:
  """Decodes PNG/JPEG bytes (or passes through an already-decoded array) to grey uint8.

  Args:
    encoded: encoded image bytes, or a uint8 array [H, W] / [H, W, 1].
    study_id: the example's study id, for the error message.
    split: the split name, for the error message.

  Returns:
    uint8 [H, W].

  Raises:
    ImageDecodeError: naming the study and the split when the bytes are not a readable image.
  """
  if isinstance(encoded, np.ndarray) and encoded.dtype == np.uint8 and encoded.ndim in (2, 3):
    if encoded.ndim == 3:
      if encoded.shape[-1] != 1:
        raise ImageDecodeError(
            f"study {study_id!r} in split {split!r}: expected a grey image [H, W, 1], got shape "
            f"{encoded.shape}")
      encoded = encoded[..., 0]
    return encoded
  if isinstance(encoded, np.ndarray):
    encoded = encoded.tobytes() if encoded.dtype == np.uint8 else encoded.item()
  try:
    with Image.open(io.BytesIO(encoded)) as img:
      img = img if img.mode == "L" else img.convert("L")
      return np.asarray(img, dtype=np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as err:
    raise ImageDecodeError(
        f"cannot decode the image of study {study_id!r} in split {split!r} ({err}). The record "
        "is corrupt: regenerate or re-download the dataset (for SynthCXR delete its builder "
        "directory and run prepare() again).") from err


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """Random augmentation ranges (config.data.augment)."""
  crop_scale: tuple[float, float] = (0.8, 1.0)   # crop area / image area
  crop_ratio: tuple[float, float] = (0.9, 1.1)   # crop width / height, sampled log-uniformly
  rotation_degrees: float = 5.0                  # uniform in [-r, r]
  brightness: float = 0.1                        # multiplicative factor in [1 - b, 1 + b]
  contrast: float = 0.1                          # factor about the image mean in [1 - c, 1 + c]

  @classmethod
  def from_config(cls, augment: Mapping[str, Any]) -> "AugmentParams":
    params = cls(crop_scale=tuple(augment["crop_scale"]), crop_ratio=tuple(augment["crop_ratio"]),
                 rotation_degrees=float(augment["rotation_degrees"]),
                 brightness=float(augment["brightness"]), contrast=float(augment["contrast"]))
    lo, hi = params.crop_scale
    if not 0.0 < lo <= hi <= 1.0:
      raise errors.ConfigError("config.data.augment.crop_scale must satisfy 0 < lo <= hi <= 1, "
                               "got "
                               f"{params.crop_scale}")
    lo, hi = params.crop_ratio
    if not 0.0 < lo <= hi:
      raise errors.ConfigError(f"config.data.augment.crop_ratio must satisfy 0 < lo <= hi, got "
                               f"{params.crop_ratio}")
    if not (0.0 <= params.brightness < 1.0 and 0.0 <= params.contrast < 1.0):
      raise errors.ConfigError("config.data.augment.brightness and .contrast must be in [0, 1), "
                               "got "
                               f"{params.brightness}, {params.contrast}")
    return params


def _canvas(in_hw: tuple[int, int]) -> tuple[int, np.ndarray]:
  """The square canvas a (possibly non-square) image is centred on: (side, image offset [x, y]).

  Crops and resizes are defined on this canvas, so a 512 x 420 radiograph is letterboxed (black
  bars) rather than stretched or cut; a square image is its own canvas.
  """
  in_h, in_w = in_hw
  side = max(in_h, in_w)
  return side, np.array([(side - in_w) / 2, (side - in_h) / 2])


def sample_crop_affine(rng: np.random.Generator, in_hw: tuple[int, int], out_size: int,
                       params: AugmentParams) -> np.ndarray:
  """Samples a random resized crop with rotation as an output -> input affine map.

  The crop is taken from the image's square canvas (`_canvas`): its area fraction ~
  U(crop_scale), aspect ratio ~ logU(crop_ratio), rotated by ~ U(-r, r) degrees about its centre,
  and its centre uniform over the positions that keep the unrotated crop inside the canvas.

  Args:
    rng: the per-element generator.
    in_hw: input image (height, width).
    out_size: output side length.
    params: augmentation ranges.

  Returns:
    float64 [2, 3] matrix A with (x_in, y_in) = A @ (x_out, y_out, 1) in continuous pixel
    coordinates (pixel centres at +0.5).
  """
  side, offset_xy = _canvas(in_hw)
  area = side * side * rng.uniform(*params.crop_scale)
  log_lo, log_hi = math.log(params.crop_ratio[0]), math.log(params.crop_ratio[1])
  ratio = math.exp(rng.uniform(log_lo, log_hi))
  crop_w = min(math.sqrt(area * ratio), side)
  crop_h = min(math.sqrt(area / ratio), side)
  cx = rng.uniform(crop_w / 2, side - crop_w / 2)
  cy = rng.uniform(crop_h / 2, side - crop_h / 2)
  theta = math.radians(rng.uniform(-params.rotation_degrees, params.rotation_degrees))
  cos, sin = math.cos(theta), math.sin(theta)
  # Output pixel offsets from the output centre, scaled to crop pixels, rotated, moved to (cx, cy).
  linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag([crop_w / out_size, crop_h / out_size])
  offset = np.array([cx, cy]) - linear @ np.array([out_size / 2, out_size / 2]) - offset_xy
  return np.concatenate([linear, offset[:, None]], axis=1)


def resize_affine(in_hw: tuple[int, int], out_size: int) -> np.ndarray:
  """The affine map [2, 3] of a plain resize of the image's square canvas to out_size^2."""
  side, offset_xy = _canvas(in_hw)
  scale = side / out_size
  return np.array([[scale, 0.0, -offset_xy[0]], [0.0, scale, -offset_xy[1]]])


def warp_image(image: np.ndarray, affine: np.ndarray, out_size: int) -> np.ndarray:
  """Applies an output -> input affine map with bilinear sampling (PIL, one C pass).

  When the map shrinks by 2x or more, the image is first box-reduced by the integer factor so the
  bilinear sampling does not alias.

  Args:
    image: uint8 [H, W].
    affine: float [2, 3] from `sample_crop_affine` or `resize_affine`.
    out_size: output side length.

  Returns:
    uint8 [out_size, out_size]; pixels mapped from outside the input are 0.
  """
  pil = Image.fromarray(image, mode="L")
  # Pixels of input per pixel of output along the output axes (column norms of the linear part).
  shrink = min(np.linalg.norm(affine[:, 0]), np.linalg.norm(affine[:, 1]))
  factor = int(shrink)
  if factor >= 2:
    pil = pil.reduce(factor)
    affine = affine / factor
  coeffs = tuple(float(v) for v in affine.reshape(-1))
  out = pil.transform((out_size, out_size), Image.Transform.AFFINE, coeffs,
                      resample=Image.Resampling.BILINEAR, fillcolor=0)
  return np.asarray(out, dtype=np.uint8)


def resize_to_unit(image: np.ndarray, size: int) -> np.ndarray:
  """The evaluation-time image path: uint8 [H, W] -> float32 [size, size] in [0, 1] (a plain
  resize of the square canvas, no augmentation). clipmed.predict uses it too."""
  if image.shape != (size, size):
    image = warp_image(image, resize_affine(image.shape, size), size)
  return to_unit_range(image)


def to_unit_range(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W] -> float32 [H, W] in [0, 1]."""
  out = image.astype(np.float32)
  out *= np.float32(1 / 255)
  return out


def jitter_brightness_contrast(image: np.ndarray, rng: np.random.Generator,
                               params: AugmentParams) -> np.ndarray:
  """Random contrast (about the image mean) then brightness (multiplicative), on [0, 1] pixels.

  Both fold into one multiply-add on the uint8 pixels: y = clip(((x - m) * c + m) * b, 0, 1).

  Args:
    image: uint8 [H, W].
    rng: the per-element generator.
    params: augmentation ranges.

  Returns:
    float32 [H, W] in [0, 1].
  """
  brightness = rng.uniform(1.0 - params.brightness, 1.0 + params.brightness)
  contrast = rng.uniform(1.0 - params.contrast, 1.0 + params.contrast)
  mean = image.mean() / 255.0
  out = image.astype(np.float32)
  out *= np.float32(contrast * brightness / 255.0)
  out += np.float32(mean * (1.0 - contrast) * brightness)
  return np.clip(out, 0.0, 1.0, out=out)


def normalize_image(pixels: np.ndarray, *, mean: float, std: float, channels: int) -> np.ndarray:
  """(x - mean) / std on [0, 1] pixels (in place), repeated to `channels`.

  Args:
    pixels: float32 [H, W] in [0, 1]; overwritten.

  Returns:
    float32 [H, W, channels] (a read-only broadcast view when channels > 1; batching copies it).
  """
  pixels -= np.float32(mean)
  pixels *= np.float32(1.0 / std)
  return np.broadcast_to(pixels[..., None], (*pixels.shape, channels))


class TextTokenizer:
  """Fixed-length tokenisation with the Rust backend of a transformers fast tokenizer.

  The backend is copied and configured once for truncation and padding to `max_length`, so calls
  never mutate it (the transformers front end does, which is not thread-safe under Grain's reader
  threads) and results equal `tokenizer(text, padding="max_length", truncation=True,
  max_length=max_length)`.
  """

  def __init__(self, tokenizer: Any, max_length: int):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, tokenizers.Tokenizer):
      raise TypeError(f"expected a transformers fast tokenizer (with .backend_tokenizer), got "
                      f"{type(tokenizer).__name__}; load it with "
                      "input_pipeline.tokenizer.load_tokenizer(path)")
    if tokenizer.pad_token is None:
      raise ValueError("the tokenizer has no pad token; fixed-length batches need one "
                       "(BERT-style [PAD])")
    self.max_length = int(max_length)
    self.pad_id = int(tokenizer.pad_token_id)
    self._json = backend.to_str()
    self._pad_token = str(tokenizer.pad_token)
    self._backend = self._configure()
    # Report-graph node texts: the same vocabulary, no special tokens, no padding.
    self.node_tokenizer = extras.NodeTokenizer(self._json)

  def _configure(self) -> tokenizers.Tokenizer:
    backend = tokenizers.Tokenizer.from_str(self._json)
    backend.enable_truncation(max_length=self.max_length)
    backend.enable_padding(length=self.max_length, pad_id=self.pad_id, pad_token=self._pad_token)
    return backend

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    del state["_backend"]
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._backend = self._configure()

  def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns (input_ids int32 [L], attention_mask int32 [L])."""
    enc = self._backend.encode(text)
    return np.asarray(enc.ids, np.int32), np.asarray(enc.attention_mask, np.int32)


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """What the example transforms need: the batch spec and config.data values (picklable)."""
  split: str
  batch: batch_lib.BatchSpec
  class_names: tuple[str, ...]
  mean: float
  std: float
  uncertain_as: str               # uncertainty policy (chexpert.UNCERTAINTY_POLICIES)
  augment: AugmentParams | None   # None: no augmentation (plain resize)
  text_field: str                 # the field tokenised as the report (TEXT_FIELDS)

  @classmethod
  def from_config(cls, data_config: Any, batch: batch_lib.BatchSpec, *, split: str, train: bool,
                  class_names: tuple[str, ...]) -> "ExampleSpec":
    """From config.data and the batch spec (which fields and shapes to produce)."""
    check_data_config(data_config)
    augment = None
    if train and data_config.augment.enabled:
      augment = AugmentParams.from_config(data_config.augment)
    if len(class_names) != batch.num_classes:
      raise ValueError(f"{len(class_names)} class names for a batch of {batch.num_classes} "
                       "label classes")
    return cls(split=split, batch=batch, class_names=tuple(class_names),
               mean=float(data_config.mean), std=float(data_config.std),
               uncertain_as=chexpert.uncertainty_policy(data_config.uncertain_as),
               augment=augment,
               text_field=str(data_config.text_field))


def check_data_config(data_config: Any) -> None:
  """Raises ConfigError for config.data values the transforms cannot use."""
  if data_config.std <= 0:
    raise errors.ConfigError(f"config.data.std must be > 0, got {data_config.std}")
  if data_config.text_field not in TEXT_FIELDS:
    raise errors.ConfigError(f"config.data.text_field={data_config.text_field!r} is not "
                             f"supported; use one of {TEXT_FIELDS}")
  if int(data_config.max_text_length) < 2:
    raise errors.ConfigError(f"config.data.max_text_length must be >= 2, got "
                             f"{data_config.max_text_length}")
  if int(data_config.image_size) < 8 or int(data_config.channels) not in (1, 3):
    raise errors.ConfigError(f"config.data.image_size must be >= 8 and config.data.channels 1 "
                             f"or 3, got {data_config.image_size} and {data_config.channels}")
  try:
    chexpert.uncertainty_policy(data_config.uncertain_as)
  except ValueError as e:
    raise errors.ConfigError(f"config.data.{e}") from None
  if data_config.augment.enabled:
    AugmentParams.from_config(data_config.augment)


def _field(example: Mapping[str, Any], name: str, split: str) -> Any:
  try:
    return example[name]
  except KeyError:
    raise errors.DataError(
        f"an example of split {split!r} has no {name!r} field (fields: {sorted(example)}); "
        "prepare the dataset with the current code (python -m input_pipeline.prepare, see the "
        "README's Datasets section)") from None


def process_example(example: Mapping[str, Any], spec: ExampleSpec, tokenizer: TextTokenizer,
                    rng: np.random.Generator | None) -> dict[str, Any]:
  """Decodes, augments (when `rng` and spec.augment are set), normalises and tokenises one example.

  Returns:
    One example of spec.batch (clipmed/batch.py): image, input_ids, attention_mask, labels (the
    clinical vector, not L2-normalised), and `graph` / `negative` when the spec asks for them.
  """
  study_id = as_text(_field(example, "study_id", spec.split))
  image = decode_image(_field(example, "image", spec.split), study_id=study_id, split=spec.split)
  size = spec.batch.image_size
  if spec.augment is not None and rng is not None:
    affine = sample_crop_affine(rng, image.shape, size, spec.augment)
    pixels = jitter_brightness_contrast(warp_image(image, affine, size), rng, spec.augment)
  else:
    pixels = resize_to_unit(image, size)
  labels = chexpert.clinical_vector(_field(example, "labels", spec.split),
                                    class_names=spec.class_names,
                                    uncertain_as=spec.uncertain_as, normalize=False)
  out = {batch_lib.IMAGE: normalize_image(pixels, mean=spec.mean, std=spec.std,
                                          channels=spec.batch.channels),
         batch_lib.LABELS: labels}
  if spec.batch.text:
    ids, mask = tokenizer(as_text(_field(example, spec.text_field, spec.split)))
    out.update({batch_lib.INPUT_IDS: ids, batch_lib.ATTENTION_MASK: mask})
  if spec.batch.negatives:
    out[batch_lib.NEGATIVE] = extras.negative_fields(
        example, tokenizer, class_names=spec.class_names, uncertain_as=spec.uncertain_as,
        split=spec.split)
  if spec.batch.graph is not None:
    for report, negative in ((out, False), (out.get(batch_lib.NEGATIVE), True)):
      if report is not None:
        report[batch_lib.GRAPH] = extras.graph_arrays(
            example, tokenizer.node_tokenizer, spec.batch.graph, negative=negative,
            study_id=study_id, split=spec.split)
  return out


class TrainTransform(grain.transforms.RandomMap):
  """Grain random map: decode, augment, normalise, tokenise (per-element seeded generator)."""

  def __init__(self, spec: ExampleSpec, tokenizer: TextTokenizer):
    self.spec = spec
    self.tokenizer = tokenizer

  def random_map(self, element: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    return process_example(element, self.spec, self.tokenizer, rng)


class EvalTransform(grain.transforms.Map):
  """Grain map: decode, resize, normalise, tokenise (no randomness)."""

  def __init__(self, spec: ExampleSpec, tokenizer: TextTokenizer):
    self.spec = spec
    self.tokenizer = tokenizer

  def map(self, element: Mapping[str, Any]) -> dict[str, Any]:
    return process_example(element, self.spec, self.tokenizer, None)
