"""CheXpert-14 categories and the clinical label vector of docs/METHOD.md.

Labeler convention (the CheXpert labeler's CSV): 1.0 positive, 0.0 negative, -1.0 uncertain, blank
(NaN in arrays) not mentioned.
"""

from collections.abc import Sequence

import numpy as np

CATEGORIES: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NUM_CATEGORIES = len(CATEGORIES)
INDEX = {name: i for i, name in enumerate(CATEGORIES)}

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
NOT_MENTIONED = float("nan")

NO_FINDING = INDEX["No Finding"]
SUPPORT_DEVICES = INDEX["Support Devices"]


def apply_no_finding_rule(labels: np.ndarray) -> np.ndarray:
  """Sets No Finding per CheXpert: 1 exactly when no category but Support Devices is 1 or -1.

  Args:
    labels: [..., 14] labeler-convention array (NaN = not mentioned).

  Returns:
    A copy with the No Finding column set to 1.0 or NaN (blank), as the CheXpert labeler does.
  """
  labels = np.array(labels, dtype=np.float32, copy=True)
  others = np.delete(labels, [NO_FINDING, SUPPORT_DEVICES], axis=-1)
  abnormal = np.any((others == POSITIVE) | (others == UNCERTAIN), axis=-1)
  labels[..., NO_FINDING] = np.where(abnormal, np.nan, POSITIVE)
  return labels


def clinical_vector(labels: np.ndarray, *, class_names: Sequence[str] = CATEGORIES,
                    uncertain_as: float = 1.0, normalize: bool = True) -> np.ndarray:
  """Maps labeler output to the clinical vector c of METHOD.md.

  positive -> 1, uncertain -> `uncertain_as` (1 = "U-ones"), negative and blank -> 0; when the
  classes include "No Finding", it is 1 exactly when no other class but "Support Devices" is
  positive or uncertain (CheXpert's rule).

  Args:
    labels: [..., K] labeler-convention array (NaN = not mentioned).
    class_names: the K class names (the dataset's; CheXpert-14 by default).
    uncertain_as: value for uncertain mentions.
    normalize: L2-normalise the vector; an all-zero vector stays zero.

  Returns:
    [..., K] float32.
  """
  labels = np.asarray(labels, dtype=np.float32)
  if labels.shape[-1] != len(class_names):
    raise ValueError(f"expected {len(class_names)} label classes in the last axis, "
                     f"got shape {labels.shape}")
  vec = np.where(labels == POSITIVE, 1.0, 0.0)
  vec = np.where(labels == UNCERTAIN, uncertain_as, vec).astype(np.float32)
  names = list(class_names)
  if "No Finding" in names:
    no_finding = names.index("No Finding")
    skip = [no_finding] + [names.index(n) for n in ("Support Devices",) if n in names]
    others = np.delete(vec, skip, axis=-1)
    vec[..., no_finding] = np.where(np.any(others > 0, axis=-1), 0.0, 1.0)
  if normalize:
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    vec = np.where(norm > 0, vec / np.maximum(norm, 1e-12), 0.0).astype(np.float32)
  return vec


def names_to_indices(names: Sequence[str]) -> list[int]:
  """Category names -> indices, with a clear error for an unknown name."""
  out = []
  for name in names:
    if name not in INDEX:
      raise ValueError(f"unknown CheXpert category {name!r}; expected one of {list(CATEGORIES)}")
    out.append(INDEX[name])
  return out
