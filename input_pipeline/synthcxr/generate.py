"""One SynthCXR example from (seed, split, index): study -> report + labels -> image.

Each example has its own generator np.random.default_rng([seed, split_id, index]), so an example
does not depend on which others were generated, or in which order.
"""

import time
from typing import Any

import numpy as np

from input_pipeline.synthcxr import findings as findings_lib
from input_pipeline.synthcxr import render as render_lib
from input_pipeline.synthcxr import reports

SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  if split not in SPLIT_IDS:
    raise ValueError(f"unknown SynthCXR split {split!r}; expected one of {list(SPLIT_IDS)}")
  return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def _sample_report(rng: np.random.Generator) -> tuple[findings_lib.Study, int, reports.Report]:
  """The first draws of an example's generator: study, tube depth, report (no image yet)."""
  study = findings_lib.sample_study(rng)
  ett_cm = int(rng.integers(3, 7))
  return study, ett_cm, reports.write_report(study, rng, ett_cm=ett_cm)


def generate_report(seed: int, split: str, index: int) -> str:
  """The report text of example `index` (identical to generate_example's, without rendering).

  Cheap (thousands per second), so a builder can write a whole split's reports first.
  """
  return _sample_report(example_rng(seed, split, index))[2].text


def generate_example(renderer: render_lib.Renderer, seed: int, split: str,
                     index: int) -> dict[str, Any]:
  """Generates one example with the generated features of the `synth_cxr` TFDS builder.

  Returns:
    dict: image uint8 [S, S, 1], report / findings / impression / study_id / view str,
    labels float32 [14] (CheXpert labeler convention, NaN = not mentioned). The report-processing
    features (hard negative, graphs) are added by the builder (processing.py).
  """
  rng = example_rng(seed, split, index)
  study, ett_cm, report = _sample_report(rng)
  anat = renderer.sample_anatomy(rng, study.view)
  image = renderer.render(anat, study, rng, ett_cm=ett_cm)
  return {
      "image": image[:, :, None],
      "report": report.text,
      "findings": report.findings,
      "impression": report.impression,
      "labels": report.labels,
      "study_id": f"synth{seed}-{split}-{index:06d}",
      "view": study.view,
  }


def measure_speed(image_size: int = 128, num: int = 500, seed: int = 0) -> dict[str, float]:
  """Examples per second of rendering + report writing on the calling thread (one core).

  Texture banks are built before timing starts (their build time is reported as setup_s). On a
  shared machine images_per_cpu_s (CPU time of this process) is the steadier number.

  Returns:
    dict(images_per_s, images_per_cpu_s, seconds, num, image_size, setup_s).
  """
  start = time.perf_counter()
  renderer = render_lib.Renderer(image_size)
  setup_s = time.perf_counter() - start
  start, cpu_start = time.perf_counter(), time.process_time()
  for i in range(num):
    generate_example(renderer, seed, "train", i)
  elapsed = time.perf_counter() - start
  cpu = time.process_time() - cpu_start
  return {"images_per_s": num / elapsed, "images_per_cpu_s": num / max(cpu, 1e-9),
          "seconds": elapsed, "num": float(num), "image_size": float(image_size),
          "setup_s": setup_s}
