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


# How uncertain (-1) labels enter the clinical vector and the evaluation labels (CheXpert's
# policies, Irvin et al. 2019): "ones" (U-Ones) reads them as positive, "zeros" (U-Zeros) as
# negative, "ignore" (U-Ignore) as unknown: they stay -1 in the evaluation labels (evaluators
# leave such a study out of that class) and add nothing to the clinical vector, where they still
# keep No Finding at 0 (an unknown finding is not a normal study). config.data.uncertain_as.
UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore")
# Numbers accepted for configs written before the policy names: 1.0 = "ones", 0.0 = "zeros".
_POLICY_ALIASES = {"1": "ones", "1.0": "ones", "0": "zeros", "0.0": "zeros"}


def uncertainty_policy(value: str | float) -> str:
  """The policy name of a config value ("ones", "zeros", "ignore", or the numbers 1.0 / 0.0).

  Raises:
    ValueError: for any other value, naming the accepted ones.
  """
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    text = str(float(value))
  else:
    text = str(value).strip().lower()
  text = _POLICY_ALIASES.get(text, text)
  if text not in UNCERTAINTY_POLICIES:
    raise ValueError(f"uncertain_as={value!r} is not an uncertainty policy; use one of "
                     f"{list(UNCERTAINTY_POLICIES)} (U-Ones, U-Zeros, U-Ignore)")
  return text


def apply_uncertainty_policy(labels: np.ndarray, policy: str | float) -> np.ndarray:
  """Labeler-convention labels with the policy applied to the uncertain (-1) entries.

  "ones" -> 1.0, "zeros" -> 0.0, "ignore" -> left at -1.0 (for the caller to leave out).

  Args:
    labels: [..., K] labeler-convention array (NaN = not mentioned).
    policy: an uncertainty policy (uncertainty_policy).

  Returns:
    [..., K] float32 copy.
  """
  policy = uncertainty_policy(policy)
  labels = np.array(labels, dtype=np.float32, copy=True)
  if policy != "ignore":
    labels[labels == UNCERTAIN] = POSITIVE if policy == "ones" else NEGATIVE
  return labels


def clinical_vector(labels: np.ndarray, *, class_names: Sequence[str] = CATEGORIES,
                    uncertain_as: str | float = "ones", normalize: bool = True) -> np.ndarray:
  """Maps labeler output to the clinical vector c of METHOD.md.

  positive -> 1, negative and blank -> 0, uncertain per the policy `uncertain_as` (1 for
  "ones", 0 for "zeros" and "ignore"); when the classes include "No Finding", it is 1 exactly
  when no other class but "Support Devices" is positive, or uncertain under "ones" / "ignore"
  (CheXpert's rule; under "zeros" an uncertain finding is a negative one).

  Args:
    labels: [..., K] labeler-convention array (NaN = not mentioned).
    class_names: the K class names (the dataset's; CheXpert-14 by default).
    uncertain_as: the uncertainty policy (config.data.uncertain_as).
    normalize: L2-normalise the vector; an all-zero vector stays zero.

  Returns:
    [..., K] float32.
  """
  labels = np.asarray(labels, dtype=np.float32)
  if labels.shape[-1] != len(class_names):
    raise ValueError(f"expected {len(class_names)} label classes in the last axis, "
                     f"got shape {labels.shape}")
  labels = apply_uncertainty_policy(labels, uncertain_as)
  vec = np.where(labels == POSITIVE, 1.0, 0.0).astype(np.float32)
  names = list(class_names)
  if "No Finding" in names:
    no_finding = names.index("No Finding")
    skip = [no_finding] + [names.index(n) for n in ("Support Devices",) if n in names]
    others = np.delete(labels, skip, axis=-1)
    abnormal = np.any((others == POSITIVE) | (others == UNCERTAIN), axis=-1)
    vec[..., no_finding] = np.where(abnormal, 0.0, 1.0)
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
