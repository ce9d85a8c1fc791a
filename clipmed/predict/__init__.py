"""Use a trained model: embed images and reports, zero-shot findings, report retrieval.

    import clipmed.predict
    model = clipmed.predict.load("workdirs/demo")        # a training workdir or an export dir
    emb = model.embed_images(["a.png", "b.dcm"])        # [N, D] L2-normalised
    probs = model.zero_shot(["a.png"], findings=["pleural effusion", "pneumothorax"])
    top = model.retrieve(["a.png"], reports, k=5)       # (indices [N, k], similarities [N, k])

Command line (clipmed/predict/cli.py; one line per unreadable file on stderr, the other files are
still scored):

    python -m clipmed.predict --model DIR --images a.png b.dcm scans/ \\
        [--findings "pleural effusion,pneumothorax"] [--reports reports.csv --top-k 5] \\
        [--output out.csv|out.json]

The numbers are the evaluation code's: an image file is decoded and resized exactly as dataset
preparation stores it (input_pipeline/images.py: JPEG, PNG, 16-bit PNG, DICOM windowing and
MONOCHROME1), then resized and normalised as the evaluation pipeline does
(input_pipeline/transforms.py); texts go through the evaluation's Embedder
(clipmed/evaluators/embedder.py) and zero-shot scores through its prompt protocol
(clipmed/evaluators/prompt_sets.py). Importing this module does not import TensorFlow.
"""

import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from clipmed import errors
from clipmed.evaluators import prompt_sets
from clipmed.evaluators.base import EvalContext
from clipmed.evaluators.embedder import Embedder
from clipmed.models import saved
from clipmed.normalize import l2_normalize
from clipmed.predict.decision import (DecisionOffsets, calibrate, check_calibration_priors,
                                      decision_offset, evaluation_offsets, prior_offset,
                                      probabilities)
from input_pipeline import images as images_lib
from input_pipeline import transforms
from input_pipeline.tokenizer import load_tokenizer

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_PROMPTS", "DecisionOffsets", "ImageInput", "Model",
           "Preprocessing", "calibrate", "check_calibration_priors", "decision_offset",
           "evaluation_offsets", "load", "prior_offset", "probabilities", "restore_workdir",
           "run_prompt_files", "top_k"]

DEFAULT_BATCH_SIZE = 32
DEFAULT_PROMPTS = "chexpert"

ImageInput = Any  # a path (str / os.PathLike), a PIL image, or a uint8 / uint16 numpy array


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How an image becomes a model input (saved.PREPROCESSING_KEYS)."""
  source_max_size: int  # longest side after dataset preparation's resize
  image_size: int
  channels: int
  mean: float
  std: float
  max_text_length: int

  @classmethod
  def from_config(cls, config: Any) -> "Preprocessing":
    """From a training config: the values config.data gives the evaluation pipeline."""
    data = config.data
    source = data.synth.image_size if data.name == "synth_cxr" else data.prepared.image_size
    return cls(source_max_size=int(source), image_size=int(data.image_size),
               channels=int(data.channels), mean=float(data.mean), std=float(data.std),
               max_text_length=int(data.max_text_length))

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _as_bytes(image: ImageInput) -> tuple[bytes, str]:
  """A PIL image or numpy array -> (lossless encoded bytes, a name for errors)."""
  if isinstance(image, np.ndarray):
    array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    if array.dtype not in (np.uint8, np.uint16) or array.ndim not in (2, 3) or (
        array.ndim == 3 and array.shape[-1] not in (3, 4)) or (
            array.dtype == np.uint16 and array.ndim != 2):
      raise errors.UserError(
          f"cannot use a numpy array of dtype {image.dtype} and shape {image.shape} as an image: "
          "pass uint8 [H, W], [H, W, 3] or [H, W, 4], or uint16 [H, W] (16-bit grey)")
    image = Image.fromarray(array)
  if not isinstance(image, Image.Image):
    raise errors.UserError(f"cannot use a {type(image).__name__} as an image: pass a file path, "
                           "a PIL image or a numpy array")
  buf = io.BytesIO()
  # PNG keeps 8- and 16-bit grey, RGB(A) and palettes as they are; TIFF the 32-bit modes.
  image.save(buf, format="PNG" if image.mode not in ("I", "F") else "TIFF")
  return buf.getvalue(), f"<{image.mode} image {image.width}x{image.height}>"


class Model:
  """A trained clipmed model for inference (see `load`).

  Attributes:
    tokenizer: the run's transformers fast tokenizer.
    preprocessing: the image and text constants of the run.
    logit_scale: the model's learned logit scale s (a float).
    step: the training step of the weights.
    default_prompts: the prompt set used when zero_shot gets none.
    default_findings: the findings scored when zero_shot gets none.
  """

  def __init__(self, model, params, tokenizer, preprocessing: Preprocessing, *,
               prompt_files: Mapping[str, str], default_prompts: str,
               default_findings: Sequence[str], step: int, batch_size: int = DEFAULT_BATCH_SIZE):
    self.tokenizer = tokenizer
    self.preprocessing = preprocessing
    self.step = int(step)
    self.prompt_files = dict(prompt_files)
    self.default_prompts = default_prompts
    self.default_findings = list(default_findings)
    self.batch_size = int(batch_size)
    self.module = model
    self.params = params
    self._embedder = Embedder(model, tokenizer, eval_batch_size=self.batch_size,
                              max_text_length=preprocessing.max_text_length)
    bound = self._embedder.bind(params)
    self._embed_batch = bound["embed_images"]
    self._embed_texts = bound["embed_texts"]
    self.logit_scale = float(bound["logit_scale"])

  # ------------------------------------------------------------------ images

  def load_image(self, image: ImageInput) -> np.ndarray:
    """An image file / PIL image / array -> uint8 [H, W] as dataset preparation stores it.

    Raises:
      input_pipeline.images.ImageError: the file is missing, corrupt or not an image.
    """
    if isinstance(image, (str, os.PathLike)):
      return images_lib.load_grayscale(image, max_size=self.preprocessing.source_max_size)[0]
    data, name = _as_bytes(image)
    return images_lib.decode_grayscale(data, max_size=self.preprocessing.source_max_size,
                                       name=name)[0]

  def preprocess(self, image: ImageInput) -> np.ndarray:
    """An image -> float32 [S, S, C], the model input the evaluation pipeline would make."""
    p = self.preprocessing
    pixels = transforms.resize_to_unit(self.load_image(image), p.image_size)
    return np.array(transforms.normalize_image(pixels, mean=p.mean, std=p.std,
                                               channels=p.channels))

  def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
    """Preprocessed images float32 [N, S, S, C] -> [N, D] L2-normalised embeddings, in batches
    of `batch_size` (the last padded, so one compilation)."""
    pixels = np.asarray(pixels, np.float32)
    out = []
    for start in range(0, pixels.shape[0], self.batch_size):
      chunk = pixels[start:start + self.batch_size]
      n = chunk.shape[0]
      if n < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]),
                                                np.float32)])
      out.append(np.asarray(self._embed_batch(chunk))[:n])
    if not out:
      return np.zeros((0, int(self.module.config.embed_dim)), np.float32)
    return l2_normalize(np.concatenate(out))

  def embed_images(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
    """Image paths, PIL images or arrays -> [N, D] L2-normalised float32 embeddings."""
    images = _as_list(images)
    if not images:
      return self.embed_pixels(np.zeros((0, 1, 1, 1), np.float32))
    return self.embed_pixels(np.stack([self.preprocess(image) for image in images]))

  # ------------------------------------------------------------------ texts

  def tokenize(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Report texts -> (input_ids, attention_mask) int32 [M, L], the run's fixed-length
    tokenisation (what `embed_reports` feeds the text encoder)."""
    return self._embedder.tokenize([texts] if isinstance(texts, str) else list(texts))

  def embed_reports(self, texts: str | Sequence[str]) -> np.ndarray:
    """Report texts -> [M, D] L2-normalised float32 embeddings (the evaluation's tokenisation)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    return l2_normalize(self._embed_texts(texts))

  # ------------------------------------------------------------------ tasks

  def prompt_sets(self, findings: Sequence[str] | None = None,
                  prompts: str | Mapping[str, Any] | None = None
                  ) -> tuple[list[str], dict[str, prompt_sets.PromptSet]]:
    """(class names, their prompt sets) for zero-shot.

    Args:
      findings: names of the prompt file's classes, case-insensitive ("pleural effusion");
        default: `default_findings` (all classes of an explicit `prompts` mapping).
      prompts: a prompt set name (of `prompt_files`, e.g. "chexpert"), a .json prompt file, or a
        mapping {finding: {"positive": [...], "negative": [...]}}; default `default_prompts`.
    """
    if isinstance(prompts, Mapping):
      table = {str(k): v for k, v in prompts.items()}
      path = "<prompts argument>"
    else:
      path = self.prompt_files.get(prompts or self.default_prompts) or prompt_sets.prompt_path(
          prompts)
      table = _prompt_table(path)
    if findings is None:
      findings = list(table) if isinstance(prompts, Mapping) else self.default_findings
    by_lower = {name.lower(): name for name in table}
    classes = []
    for finding in findings:
      name = by_lower.get(str(finding).strip().lower())
      if name is None:
        raise errors.ConfigError(f"no prompts for finding {finding!r} in {path}; known findings: "
                                 f"{', '.join(sorted(table))}")
      classes.append(name)
    if isinstance(prompts, Mapping):
      sets = {}
      for name in classes:
        entry = table[name]
        if not (isinstance(entry, Mapping) and entry.get("positive") and entry.get("negative")):
          raise errors.ConfigError(f"prompts[{name!r}] must be {{\"positive\": [...], "
                                   "\"negative\": [...]}} with nonempty lists")
        sets[name] = prompt_sets.PromptSet(tuple(entry["positive"]), tuple(entry["negative"]))
      return classes, sets
    return classes, prompt_sets.load_prompts(path, classes)

  def zero_shot_logits(self, image_embeddings: np.ndarray, findings=None, prompts=None
                       ) -> tuple[list[str], np.ndarray]:
    """(classes, [N, K] logits) of L2-normalised image embeddings, computed by the evaluation's
    `prompt_sets.prompt_logits`: s * (mean positive - mean negative prompt similarity)."""
    classes, sets = self.prompt_sets(findings, prompts)
    ctx = EvalContext(dataset="predict", logit_scale=self.logit_scale, seed=0,
                      load_split=_no_splits, embed_texts=self.embed_reports)
    return classes, prompt_sets.prompt_logits(ctx, image_embeddings, sets, classes)

  def zero_shot(self, images: ImageInput | Sequence[ImageInput], findings=None,
                prompts=None, priors: Mapping[str, float] | None = None,
                calibrate_on: ImageInput | Sequence[ImageInput] | None = None,
                offsets: DecisionOffsets | None = None) -> dict[str, np.ndarray]:
    """{finding: [N] probability} per image with the project's prompt protocol.

    Without `priors` the probability is softmax over (mean positive, mean negative prompt
    similarity) times the logit scale, i.e. sigmoid of `zero_shot_logits` (CheXzero's
    protocol): a likelihood ratio read at even odds, too high for a rare finding
    (clipmed/evaluators/prompt_sets.py). `priors` {finding: rate in (0, 1)}, e.g. the finding's
    rate in the training reports or in your population, adds its log odds to the logit: the
    probability the evaluation's decision uses with `calibrate=False` (config field `prior`).
    `calibrate_on`: images of that population (no labels); each finding's offset is then fitted
    so that their mean probability equals its prior rate (the evaluation's default,
    `calibrate=True`; every scored finding needs a prior). `offsets`: the offsets an evaluation
    of this model fitted (`evaluation_offsets`), instead of priors: the evaluation's own yes/no
    decision, probability above 1/2 (findings default to the evaluated ones). Other arguments:
    see `prompt_sets`.
    """
    if offsets is not None and findings is None:
      findings = list(offsets.classes)
    classes, _ = self.prompt_sets(findings, prompts)

    def population():
      return self.zero_shot_logits(self.embed_images(calibrate_on), classes, prompts)[1]
    offset = decision_offset(self, classes, prompts, priors=priors, offsets=offsets,
                             population=population if calibrate_on is not None else None)
    _, logits = self.zero_shot_logits(self.embed_images(images), classes, prompts)
    probs = probabilities(logits, offset)
    return {name: probs[:, k] for k, name in enumerate(classes)}

  def retrieve(self, images: ImageInput | Sequence[ImageInput], reports: Sequence[str],
               k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The k reports most similar to each image: (indices int [N, k], cosine similarities
    float32 [N, k]), best first (k is capped at len(reports))."""
    return top_k(self.embed_images(images), self.embed_reports(reports), k)


def top_k(image_embeddings: np.ndarray, report_embeddings: np.ndarray,
          k: int) -> tuple[np.ndarray, np.ndarray]:
  """[N, D] x [M, D] -> (indices [N, k], similarities [N, k]), best first; ties by index."""
  if k < 1:
    raise errors.ConfigError(f"top-k must be >= 1, got {k}")
  sims = np.asarray(image_embeddings, np.float32) @ np.asarray(report_embeddings, np.float32).T
  order = np.argsort(-sims, axis=1, kind="stable")[:, :min(k, sims.shape[1])]
  return order, np.take_along_axis(sims, order, axis=1)


def _no_splits(ctx, split):
  raise ValueError(f"clipmed.predict evaluates no dataset split ({split!r})")


def _prompt_table(path: str) -> dict[str, Any]:
  """The "classes" mapping of a prompt file (load_prompts checks the entries)."""
  if not os.path.isfile(path):
    raise errors.FileError(f"prompt file {path} does not exist; pass a bundled prompt set name "
                           "(chexpert, cxr14, ...) or a .json prompt file")
  try:
    with open(path, encoding="utf-8") as f:
      table = json.load(f).get("classes")
  except (json.JSONDecodeError, AttributeError):
    table = None
  if not isinstance(table, dict):
    raise errors.ConfigError(f"prompt file {path} must be JSON with a \"classes\" mapping")
  return table


def _as_list(images) -> list:
  if isinstance(images, (str, os.PathLike, np.ndarray, Image.Image)):
    return [images]
  return list(images)


# ---------------------------------------------------------------------------- loading


def _default_zero_shot(config: Any) -> tuple[str, list[str]]:
  """(prompt set, classes) of the config's first zero-shot evaluation, else chexpert's all."""
  for cfg in (config.get("evals") or {}).values():
    if cfg.get("task") == "zero_shot":
      return str(cfg.prompts), list(cfg.classes)
  return DEFAULT_PROMPTS, []


def run_prompt_files(config: Any) -> dict[str, str]:
  """{name: path} of the bundled prompt sets and the prompt files the config's evaluations use."""
  files = {name[:-5]: os.path.join(prompt_sets.PROMPT_DIR, name)
           for name in sorted(os.listdir(prompt_sets.PROMPT_DIR)) if name.endswith(".json")}
  for cfg in (config.get("evals") or {}).values():
    if cfg.get("prompts"):
      files.setdefault(str(cfg.prompts), prompt_sets.prompt_path(str(cfg.prompts)))
  return files


def _load_config_file(spec: str) -> Any:
  """"configs/demo.py[:arg]" -> the ConfigDict its get_config(arg) returns."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise errors.ConfigError(f"config file {path} does not exist; pass the config the run was "
                             "trained with, e.g. configs/demo.py")
  module_spec = importlib.util.spec_from_file_location("_clipmed_run_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def restore_workdir(workdir: str, step: int | None = None, config: Any = None
                    ) -> tuple[Any, Any, Any, Any, int]:
  """(config, model, params, tokenizer, step) of a training workdir's checkpoint.

  Args:
    workdir: the training workdir (checkpoints/, tokenizer/, config.json).
    step: the checkpoint step; default the latest complete one.
    config: the training config (ConfigDict or "configs/x.py[:arg]"); default the workdir's
      config.json, which runs write since clipmed saves it.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from clipmed import batch as batch_lib  # pylint: disable=g-import-not-at-top
  from clipmed import checkpointing, state as state_lib  # pylint: disable=g-import-not-at-top
  from clipmed.models import clip as clip_lib  # pylint: disable=g-import-not-at-top

  if isinstance(config, str):
    config = _load_config_file(config)
  config = config if config is not None else checkpointing.read_run_config(workdir)
  if config is None:
    raise errors.ConfigError(
        f"{workdir} has no config.json (it was trained before runs saved their config); pass the "
        "config it was trained with: load(..., config='configs/demo.py') or --config")
  tokenizer_dir = os.path.join(workdir, checkpointing.RUN_TOKENIZER)
  if not os.path.isdir(tokenizer_dir):
    raise errors.FileError(f"{tokenizer_dir} does not exist: {workdir} is not a clipmed training "
                           "workdir (or an export: those hold config.json and model.safetensors)")
  tokenizer = load_tokenizer(tokenizer_dir)
  model = clip_lib.create_model(config.model, vocab_size=len(tokenizer))
  tx = state_lib.create_optimizer(config.optimizer, state_lib.learning_rate_schedule(
      config.optimizer, config.num_train_steps))
  dummy = batch_lib.BatchSpec.from_config(config, num_classes=1).zeros(1)

  def init(key):
    params = nn.unbox(model.init({"params": key, "dropout": key}, dummy, train=False)["params"])
    return state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                opt_state=tx.init(params), tx=tx)

  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(init, jax.random.key(0)))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep=1,
                                    save_every_steps=0, async_save=False,
                                    save_data_iterator=False, read_only=True)
  try:
    step, state = ckpt.restore_state(abstract, step)
  finally:
    ckpt.close()
  return config, model, state.params, tokenizer, step


def load(path: str, step: int | None = None, *, config: Any = None,
         batch_size: int = DEFAULT_BATCH_SIZE) -> Model:
  """Loads a trained model from a training workdir or an export directory.

  Args:
    path: a workdir of `python -m clipmed.main` or a directory of `python -m clipmed.export`.
    step: workdir only: the checkpoint step (default the latest complete one).
    config: workdir only: the training config (a ConfigDict or "configs/x.py[:arg]") for runs
      whose workdir has no config.json.
    batch_size: images and texts per jitted call.

  Raises:
    clipmed.errors.UserError: the path is neither, or its files are missing or unreadable.
  """
  path = os.path.expanduser(os.fspath(path))
  if not os.path.isdir(path):
    raise errors.FileError(f"model directory {path} does not exist; pass a training workdir or "
                           "an export directory (python -m clipmed.export)")
  if saved.is_export(path):
    if step is not None or config is not None:
      raise errors.ConfigError(f"{path} is an export (one step, its own config): do not pass "
                               "step or config")
    return _load_export(path, batch_size)
  config, model, params, tokenizer, step = restore_workdir(path, step, config)
  prompts, findings = _default_zero_shot(config)
  prompt_files = run_prompt_files(config)
  return Model(model, params, tokenizer, Preprocessing.from_config(config),
               prompt_files=prompt_files, default_prompts=prompts,
               default_findings=findings or _all_classes(prompt_files, prompts), step=step,
               batch_size=batch_size)


def _all_classes(prompt_files: Mapping[str, str], prompts: str) -> list[str]:
  return list(_prompt_table(prompt_files.get(prompts) or prompt_sets.prompt_path(prompts)))


def _load_export(export_dir: str, batch_size: int) -> Model:
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  from clipmed.models import clip as clip_lib  # pylint: disable=g-import-not-at-top

  config = saved.read_config(export_dir)
  preprocessing = Preprocessing(**saved.read_preprocessing(export_dir))
  tokenizer = load_tokenizer(os.path.join(export_dir, saved.TOKENIZER))
  model = clip_lib.create_model(ml_collections.ConfigDict(config["model"]))
  params = jax.tree.map(jax.numpy.asarray, saved.read_params(export_dir))
  prompt_dir = os.path.join(export_dir, saved.PROMPTS)
  prompt_files = {name[:-5]: os.path.join(prompt_dir, name)
                  for name in sorted(os.listdir(prompt_dir)) if name.endswith(".json")}
  prompts = config.get("default_prompts", DEFAULT_PROMPTS)
  findings = config.get("default_findings") or _all_classes(prompt_files, prompts)
  return Model(model, params, tokenizer, preprocessing, prompt_files=prompt_files,
               default_prompts=prompts, default_findings=findings, step=config.get("step", 0),
               batch_size=batch_size)
