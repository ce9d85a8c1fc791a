"""The per-item work of dataset preparation, as plain picklable functions.

They run in worker processes (multiprocessing on one machine, Apache Beam workers on a cluster),
so they take and return plain values and import nothing heavy.
"""

from collections.abc import Iterator, Sequence
import dataclasses
from typing import Any

import numpy as np

from clipmed.report import processing as report_processing
from input_pipeline import images
from input_pipeline.builders import listing

# Report-processing fields stored per study (clipmed.report.processing.FIELDS; `labels` is chosen
# by the builder: the dataset's own or the labeler's).
REPORT_FIELDS = ("report_clean", "graph", "neg_report", "neg_labels", "neg_graph", "neg_entity",
                 "neg_source")


def process_report(task: tuple[int, str, int]) -> dict[str, Any]:
  """(index i, report text, seed) -> clipmed.report.processing record of the report.

  Draws from np.random.default_rng([seed, i]), as process_reports does, so the result does not
  depend on how the reports are spread over workers.
  """
  index, text, seed = task
  return report_processing.process_report(text, rng=np.random.default_rng([seed, index]))


@dataclasses.dataclass
class StudyTask:
  """Everything needed to write one study's examples (sent to a worker)."""
  split: str
  study: listing.Study
  labels: np.ndarray              # the labels to store, float32 [K]
  report_fields: dict[str, Any]   # REPORT_FIELDS values ({} for label-only datasets)
  image_size: int


def build_study(task: StudyTask) -> tuple[list[tuple[str, dict[str, Any]]], list[listing.Reject]]:
  """Decodes, resizes and PNG-encodes a study's images.

  Returns:
    (examples, rejects): examples are (key = image_id, feature dict) pairs; an image that cannot
    be read becomes a Reject with the one-line reason instead.
  """
  study = task.study
  examples, rejects = [], []
  for ref in study.images:
    try:
      pixels, _ = images.load_grayscale(ref.path, max_size=task.image_size)
    except images.ImageError as e:
      rejects.append(listing.Reject(task.split, study.study_id, ref.image_id, ref.path, e.reason))
      continue
    example = {
        "image": images.encode_png(pixels), "image_id": ref.image_id,
        "study_id": study.study_id, "patient_id": study.patient_id, "view": ref.view,
        "labels": np.asarray(task.labels, np.float32),
    }
    if task.report_fields:
      example.update(report=study.report, findings=study.findings, impression=study.impression,
                     **task.report_fields)
    examples.append((ref.image_id, example))
  return examples, rejects


def unpack(results: Iterator[tuple[Sequence[Any], Sequence[listing.Reject]]],
           rejects: list[listing.Reject]) -> Iterator[tuple[str, dict[str, Any]]]:
  """Yields the examples of build_study results, appending their rejects to `rejects`."""
  for examples, study_rejects in results:
    rejects.extend(study_rejects)
    yield from examples
