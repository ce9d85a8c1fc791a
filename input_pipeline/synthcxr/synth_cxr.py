"""TFDS builder `synth_cxr`: procedural chest radiographs with reports and CheXpert labels.

Nothing is downloaded; examples are generated from (seed, split, index). Each combination of
image size, split sizes and seed is its own builder config (e.g. "s128_n6000_seed0"), so they cache
separately under <data_dir>/synth_cxr/<config>/<version>.

A split is built in three passes: write all its reports (cheap), process them together
(processing.py: cleaned report, report graphs, one hard negative per study; pool negatives need
the whole split), then render and yield the examples in order.
"""

import dataclasses

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors, progress
from clipmed.report import chexpert
from input_pipeline.synthcxr import generate
from input_pipeline.synthcxr import processing
from input_pipeline.synthcxr import render as render_lib

# Bump when rendering, report wording or report processing changes, so stale caches are not reused.
VERSION = tfds.core.Version("1.2.0")


class _ClassProperty:
  """Read-only class-level property (overrides TFDS's `code_path`, see SynthCxr)."""

  def __init__(self, fget):
    self.fget = fget

  def __get__(self, obj, cls):
    return self.fget(cls)


def config_name(image_size: int, num_train: int, seed: int) -> str:
  return f"s{image_size}_n{num_train}_seed{seed}"


@dataclasses.dataclass(eq=False)
class SynthCxrConfig(tfds.core.BuilderConfig):
  """Builder config: image size, split sizes and the generation seed."""

  image_size: int = 128
  num_train: int = 6000
  num_validation: int = 500
  num_test: int = 1000
  seed: int = 0


def make_config(image_size: int = 128, num_train: int = 6000, num_validation: int = 500,
                num_test: int = 1000, seed: int = 0) -> SynthCxrConfig:
  """A SynthCxrConfig named after its settings (validation/test sizes also enter the name when
  they differ from the defaults, so every distinct dataset caches separately).

  The default settings return the builder's registered default config object (TFDS refuses a
  second config object with a registered name).
  """
  config = _new_config(image_size, num_train, num_validation, num_test, seed)
  if config.name == DEFAULT_CONFIG.name:
    return DEFAULT_CONFIG
  return config


def _new_config(image_size: int, num_train: int, num_validation: int, num_test: int,
                seed: int) -> SynthCxrConfig:
  for key, value in dict(image_size=image_size, num_train=num_train,
                         num_validation=num_validation, num_test=num_test).items():
    if int(value) < (32 if key == "image_size" else 0):
      raise errors.ConfigError(f"config.data.synth: {key}={value} is invalid (image_size >= 32, "
                               "sizes >= 0)")
  name = config_name(image_size, num_train, seed)
  if (num_validation, num_test) != (500, 1000):
    name += f"_v{num_validation}_t{num_test}"
  return SynthCxrConfig(
      name=name, version=VERSION,
      description=(f"SynthCXR {image_size}px, {num_train}/{num_validation}/{num_test} "
                   f"train/validation/test, seed {seed}"),
      image_size=int(image_size), num_train=int(num_train), num_validation=int(num_validation),
      num_test=int(num_test), seed=int(seed))


DEFAULT_CONFIG = _new_config(128, 6000, 500, 1000, 0)


class SynthCxr(tfds.core.GeneratorBasedBuilder):
  """Procedural chest X-rays with free-text reports and CheXpert-14 labels."""

  VERSION = VERSION
  BUILDER_CONFIGS = [DEFAULT_CONFIG]
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "Meniscus effusions, curved pneumothorax line, stronger devices and fractures, "
               "report wording agreed with clipmed.report.labeler.",
      "1.2.0": "Report processing per study: report_clean, graph, neg_report, neg_labels, "
               "neg_graph, neg_entity, neg_source (clipmed.report.processing).",
  }
  # TFDS 4.9.x finds a builder's source through `importlib_resources` (a backport it only declares
  # for Python < 3.9) and fails without it; this builder's code path is simply this file.
  code_path = _ClassProperty(lambda cls: epath.Path(__file__))

  def __init__(self, *, file_format: str | None = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 1), dtype=np.uint8,
                                         encoding_format="png"),
            "report": tfds.features.Text(),
            "findings": tfds.features.Text(),
            "impression": tfds.features.Text(),
            "labels": tfds.features.Tensor(shape=(chexpert.NUM_CATEGORIES,), dtype=np.float32),
            "study_id": tfds.features.Text(),
            "view": tfds.features.Text(),
            # Report processing (processing.py; meanings in clipmed.report.processing.FIELDS).
            "report_clean": tfds.features.Text(),
            "graph": tfds.features.Text(),  # JSON {"nodes": [[text, type]], "edges": [...]}
            "neg_report": tfds.features.Text(),
            "neg_labels": tfds.features.Tensor(shape=(chexpert.NUM_CATEGORIES,),
                                               dtype=np.float32),
            "neg_graph": tfds.features.Text(),
            "neg_entity": tfds.features.Text(),
            "neg_source": tfds.features.Text(),  # "negated", "pool" or "none"
        }),
        supervised_keys=None,
        # Keep generation order: record i of a split is example i (shuffling is the pipeline's
        # job, and this keeps an example's position independent of the others).
        disable_shuffling=True,
        homepage="https://github.com/clipmed (embedded synthetic dataset)",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    sizes = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
    return {split: self._generate_examples(split, n) for split, n in sizes.items() if n > 0}

  def _generate_examples(self, split: str, num: int):
    cfg = self.builder_config
    name = f"synth_cxr/{cfg.name}"
    texts = [generate.generate_report(cfg.seed, split, index) for index in range(num)]
    renderer = render_lib.Renderer(cfg.image_size)
    with progress.Progress(num, f"{name} {split}: reports", "studies") as bar:
      records = processing.process_split(texts, seed=cfg.seed, split=split, bar=bar)
      bar.reset(num, f"{name} {split}: images")
      for index, record in enumerate(records):
        example = generate.generate_example(renderer, cfg.seed, split, index)
        if example["report"] != texts[index]:  # generation must not depend on what ran before
          raise RuntimeError(f"{name} {split}: example {index} wrote a different report on its "
                             "second generation; SynthCXR generation is not deterministic.")
        example.update({key: record[key] for key in processing.STORED_FIELDS})
        yield f"{index:09d}", example
        bar.update()

  # TFDS prints "Downloading and preparing dataset Unknown size ..." and a "Dataset ... prepared"
  # line of its own around generation; input_pipeline.synthcxr.prepare says it once.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass
