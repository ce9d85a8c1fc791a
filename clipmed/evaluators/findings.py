"""Finding-level questions about zero-shot scores: which absent findings may be asked about, and
does the model tell a present finding from an absent one in the same image?

The CheXpert labeler orders its observations in a hierarchy (Irvin et al., AAAI 2019): a child
finding implies its parent. Cardiomegaly is an Enlarged Cardiomediastinum; Pneumonia is a
Consolidation; Edema, Consolidation, Atelectasis and Lung Lesion are Lung Opacities. So "Lung
Opacity is absent" is not a fair question about an image with Edema, even when the report's
labels leave Lung Opacity blank. `PARENT` is the one copy of that hierarchy in clipmed; tasks that
ask about absent findings (zero_shot's within-image discrimination, adversarial) drop the
ancestors of the image's present findings from its absent ones with `askable_absent`. Classes
outside the hierarchy (another dataset's names) have no relatives.
"""

from collections.abc import Sequence

import numpy as np

# child -> parent, in CheXpert category names.
PARENT: dict[str, str] = {
    "Cardiomegaly": "Enlarged Cardiomediastinum",
    "Lung Lesion": "Lung Opacity",
    "Edema": "Lung Opacity",
    "Consolidation": "Lung Opacity",
    "Atelectasis": "Lung Opacity",
    "Pneumonia": "Consolidation",
}


def ancestors(name: str) -> tuple[str, ...]:
  """The findings `name` implies, nearest first: "Pneumonia" -> ("Consolidation", "Lung Opacity")."""
  out = []
  while name in PARENT:
    name = PARENT[name]
    out.append(name)
  return tuple(out)


def implied(classes: Sequence[str]) -> np.ndarray:
  """[K, K] bool: implied[p, a] when class a is an ancestor of class p."""
  classes = list(classes)
  out = np.zeros((len(classes), len(classes)), bool)
  for p, name in enumerate(classes):
    for parent in ancestors(name):
      if parent in classes:
        out[p, classes.index(parent)] = True
  return out


def askable_absent(present: np.ndarray, absent: np.ndarray, classes: Sequence[str]) -> np.ndarray:
  """The absent findings that may be asked about: not an ancestor of a present finding.

  Args:
    present: [N, K] bool.
    absent: [N, K] bool.
    classes: the K class names.

  Returns:
    [N, K] bool, a subset of `absent`.
  """
  implied_by_present = (present.astype(np.int64) @ implied(classes).astype(np.int64)) > 0
  return absent & ~implied_by_present


def within_image_scores(scores: np.ndarray, present: np.ndarray,
                        askable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per image: how often a present finding outscores an askable absent one.

  Every (present p, askable absent a) pair of the image counts once; ties count one half.

  Args:
    scores: [N, K] zero-shot scores (higher = more likely present).
    present: [N, K] bool.
    askable: [N, K] bool absent findings that may be asked about (askable_absent).

  Returns:
    (fraction [N] float64, 0 where undefined; has_pair [N] bool: the image has at least one pair).
  """
  scores = np.asarray(scores, np.float64)
  diff = scores[:, :, None] - scores[:, None, :]                      # [N, K(p), K(a)]
  pairs = present[:, :, None] & askable[:, None, :]                   # [N, K, K]
  wins = np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0)) * pairs
  num_pairs = pairs.sum(axis=(1, 2))
  has_pair = num_pairs > 0
  fraction = np.where(has_pair, wins.sum(axis=(1, 2)) / np.maximum(num_pairs, 1), 0.0)
  return fraction, has_pair


def image_mean_share(scores: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Share of the score variance that one number per image explains (an "abnormality" score).

  Per weight row: scores minus their per-class (weighted) means; the share of the remaining sum of
  squares carried by each image's mean over classes. 1/K when classes vary independently, 1 when
  every class moves together with one per-image score.

  Args:
    scores: [N, K].
    w: [R, N] study weights.

  Returns:
    [R] float64; NaN without weight or variance.
  """
  scores = np.asarray(scores, np.float64)
  k = scores.shape[1]
  total = w.sum(axis=1, keepdims=True)                                 # [R, 1]
  with np.errstate(invalid="ignore", divide="ignore"):
    class_mean = (w @ scores) / total                                  # [R, K]
    image_mean = scores.mean(axis=1)                                   # [N]
    # sum_i w_i sum_k (x_ik - c_k)^2 and sum_i w_i K (m_i - mean_k c_k)^2, expanded so that no
    # [R, N, K] array is formed.
    sq = w @ (scores ** 2).sum(axis=1) - np.sum(class_mean ** 2, axis=1) * total[:, 0]
    c_bar = class_mean.mean(axis=1)                                    # [R]
    sq_mean = k * (w @ image_mean ** 2 - c_bar ** 2 * total[:, 0])
    return np.where((total[:, 0] > 0) & (sq > 0), sq_mean / sq, np.nan)
