"""CheXpert-v1.0 and CheXpert-v1.0-small: chest radiographs with CheXpert labels (no reports).

    python -m input_pipeline.prepare --dataset=chexpert --manual_dir=/data/CheXpert-v1.0-small \\
        --data_dir=/data/tfds [--five_by_200=/data/chexpert_5x200.csv] [--seed=0] [--workers=16]

The download, untouched (stanfordmlgroup.github.io/competitions/chexpert, Stanford AIMI):
  CheXpert-v1.0-small/ (or CheXpert-v1.0/)
    train.csv, valid.csv       Path, Sex, Age, Frontal/Lateral, AP/PA, then the 14 labels
    train/patient00001/study1/view1_frontal.jpg ...
    valid/patient64541/study1/view1_frontal.jpg ...
--manual_dir is the folder holding train.csv, or the folder above it (CheXpert-v1.0 is used when
it holds both CheXpert-v1.0 and CheXpert-v1.0-small). A Path such as
"CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg" is read below the folder holding
train.csv, so a renamed top folder works too.

Splits:
  train        the images of train.csv, minus the studies of test_5x200 (no leakage: the chosen
               image and the other images of its study are left out; the latter are counted in
               `filtered`).
  validation   valid.csv (labels by radiologists, complete 0/1).
  test_5x200   GLoRIA's CheXpert 5x200 evaluation protocol: for each of Atelectasis,
               Cardiomegaly, Consolidation, Edema and Pleural Effusion, 200 images of train.csv
               that are frontal, positive (1.0) for exactly that one of the five, not uncertain
               (-1.0) for any of the five (0 or blank for the other four). Candidates are sorted by
               Path and drawn with np.random.default_rng(--seed), class by class in that order;
               a class with fewer than 200 candidates (a partial download) keeps all of them, as
               the printed notes say. --five_by_200=FILE uses a list instead (a CSV with a Path
               column, e.g. GLoRIA's chexpert_5x200.csv; every row must be an image of train.csv
               that meets the rule above).
Labels: the CSV's 14 columns (1.0 / 0.0 / -1.0 / blank -> 1 / 0 / -1 / NaN), stored in
clipmed.report.chexpert.CATEGORIES order. Views: "Frontal/Lateral" + "AP/PA" -> PA / AP (FRONTAL
when a frontal image has no AP/PA), LATERAL / LL / RL; every view is stored, training keeps the
frontal ones by default (config.data.views). Each image is one example: image_id = the CSV's
Path, study_id "patient00001/study1", patient_id "patient00001".
Rejected: a listed image missing on disk ("file not found"), a Path that is not
.../patientN/studyN/<file>, and (later, by the shared code) unreadable images.
"""

import collections
import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from clipmed import errors
from clipmed.report import chexpert
from input_pipeline.builders import base
from input_pipeline.builders import listing

HOMEPAGE = "https://stanfordmlgroup.github.io/competitions/chexpert/"
# Folders that hold train.csv in the download: the full-resolution one first.
TOP_FOLDERS = ("CheXpert-v1.0", "CheXpert-v1.0-small")
INDEX_FILES = (("train.csv", "train"), ("valid.csv", "validation"))
TEST_5X200 = "test_5x200"
FIVE_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
PER_CLASS = 200
_FIVE = [chexpert.INDEX[name] for name in FIVE_CLASSES]
# .../<split folder>/patientN/studyN/<file>: the part of a path that names one image.
_IMAGE_PATH = re.compile(r"(?:^|/)((?:[^/]+/)?(patient\d+)/(study\d+)/([^/]+))$")


@dataclasses.dataclass(frozen=True, eq=False)
class Row:
  """One image row of train.csv / valid.csv.

  Attributes:
    path: the Path cell as written (the image_id).
    relative: the path below the top folder, e.g. "train/patient00001/study1/view1_frontal.jpg"
      ("" when the Path does not name an image).
    patient: "patient00001".
    study: "patient00001/study1".
    view: the canonical view (view_of).
    labels: float32 [14] in chexpert.CATEGORIES order.
    line: the line of the row in its file, for messages.
  """
  path: str
  relative: str
  patient: str
  study: str
  view: str
  labels: np.ndarray
  line: int


def view_of(frontal_lateral: str, ap_pa: str, path: str = "") -> str:
  """CheXpert's "Frontal/Lateral" and "AP/PA" cells (also CheXpert Plus's frontal_lateral and
  ap_pa) -> the stored view.

  Frontal/Lateral decides frontal vs lateral; AP/PA refines it where it agrees (AP, PA on a
  frontal image; LL, RL on a lateral one), else "FRONTAL" / "LATERAL". Without Frontal/Lateral:
  AP/PA alone, then the file name (view1_frontal.jpg); "" when nothing says.
  """
  side, projection = frontal_lateral.strip().lower(), ap_pa.strip().upper()
  if side == "frontal":
    return projection if projection in ("AP", "PA") else "FRONTAL"
  if side == "lateral":
    return projection if projection in ("LL", "RL") else "LATERAL"
  if projection in ("AP", "PA", "LL", "RL"):
    return projection
  name = os.path.basename(path).lower()
  return "FRONTAL" if "_frontal" in name else "LATERAL" if "_lateral" in name else ""


def image_key(path: str) -> str:
  """"patient00001/study1/view1_frontal" for any path ending in patientN/studyN/<file>: how
  CheXpert, CheXpert Plus (.jpg or .png) and user lists name the same image; "" otherwise."""
  match = _IMAGE_PATH.search(path.replace("\\", "/").strip())
  if not match:
    return ""
  return f"{match.group(2)}/{match.group(3)}/{os.path.splitext(match.group(4))[0]}"


def find_index_dir(manual_dir: str) -> str:
  """The folder holding train.csv: manual_dir itself or one of TOP_FOLDERS in it ("" if none)."""
  for folder in ("",) + TOP_FOLDERS:
    if os.path.isfile(os.path.join(manual_dir, folder, "train.csv")):
      return os.path.join(manual_dir, folder) if folder else manual_dir
  return ""


def read_index(path: str) -> list[Row]:
  """Reads train.csv or valid.csv.

  Raises:
    DataError: a missing column or a label cell that is not 1.0 / 0.0 / -1.0 / blank, naming the
      file (and line).
  """
  header, rows = listing.read_csv(path)
  listing.require_columns(path, header, ("Path", "Frontal/Lateral", "AP/PA") + chexpert.CATEGORIES)
  out = []
  for line, row in enumerate(rows, start=2):
    try:
      labels = np.array([listing.parse_label(row[name]) for name in chexpert.CATEGORIES],
                        np.float32)
    except ValueError as e:
      raise errors.DataError(f"{path}, line {line}: {e}") from None
    cell = row["Path"].strip().replace("\\", "/")
    match = _IMAGE_PATH.search(cell)
    relative, patient, study = ("", "", "") if not match else (
        match.group(1), match.group(2), f"{match.group(2)}/{match.group(3)}")
    out.append(Row(path=cell, relative=relative, patient=patient, study=study,
                   view=view_of(row["Frontal/Lateral"], row["AP/PA"], cell), labels=labels,
                   line=line))
  return out


def five_by_200_class(row: Row) -> str:
  """The one of FIVE_CLASSES an image stands for in the 5x200 protocol, or "" when it does not
  qualify (module docstring); the reason is `five_by_200_problem`."""
  return "" if five_by_200_problem(row) else FIVE_CLASSES[int(np.argmax(row.labels[_FIVE] == 1.0))]


def five_by_200_problem(row: Row) -> str:
  """Why an image of train.csv is not a 5x200 image ("" when it is)."""
  if not listing.is_frontal(row.view):
    return f"the view is {row.view or 'unknown'}, not frontal"
  five = row.labels[_FIVE]
  uncertain = [name for name, value in zip(FIVE_CLASSES, five) if value == -1.0]
  if uncertain:
    return f"it is uncertain (-1.0) for {', '.join(uncertain)}"
  positive = [name for name, value in zip(FIVE_CLASSES, five) if value == 1.0]
  if len(positive) != 1:
    return (f"it is positive for {len(positive)} of {', '.join(FIVE_CLASSES)} "
            f"({', '.join(positive) or 'none'}), not exactly one")
  return ""


def draw_five_by_200(rows: list[Row], seed: int,
                     per_class: int | None = None) -> tuple[list[Row], list[str]]:
  """Draws the 5x200 images from the rows of train.csv (module docstring).

  Args:
    rows: the rows of train.csv.
    seed: of np.random.default_rng.
    per_class: images per class (PER_CLASS when None).

  Returns:
    (chosen rows, class by class, sorted by Path within a class; a note when a class is short).
  """
  per_class = PER_CLASS if per_class is None else per_class
  candidates = collections.defaultdict(list)
  for row in rows:
    name = five_by_200_class(row) if row.relative else ""
    if name:
      candidates[name].append(row)
  rng = np.random.default_rng(seed)
  chosen, short = [], []
  for name in FIVE_CLASSES:
    pool = sorted(candidates[name], key=lambda r: r.path)
    picks = rng.choice(len(pool), size=min(per_class, len(pool)), replace=False)
    chosen += [pool[i] for i in sorted(picks)]
    if len(pool) < per_class:
      short.append(f"{name} {len(pool)}")
  notes = [f"{TEST_5X200}: fewer than {per_class} candidate images for {', '.join(short)}; "
           "all of them are used"] if short else []
  return chosen, notes


def read_five_by_200(path: str, rows: list[Row], train_csv: str) -> list[Row]:
  """The rows of train.csv named by a user's 5x200 list (a CSV with a Path column).

  Raises:
    DataError: naming the line of a Path that is not in train.csv, does not meet the 5x200 rule,
      or is listed twice.
  """
  header, listed = listing.read_csv(path)
  listing.require_columns(path, header, ("Path",))
  by_relative = {row.relative: row for row in rows if row.relative}
  chosen, seen = [], set()
  for line, entry in enumerate(listed, start=2):
    cell = entry["Path"].strip().replace("\\", "/")
    match = _IMAGE_PATH.search(cell)
    row = by_relative.get(match.group(1)) if match else None
    if row is None:
      raise errors.DataError(f"--five_by_200={path}, line {line}: {cell!r} is not an image of "
                             f"{train_csv}; list images of the train split only")
    problem = five_by_200_problem(row)
    if problem:
      raise errors.DataError(
          f"--five_by_200={path}, line {line}: {cell!r} is not a 5x200 image: {problem} in "
          f"{train_csv}, line {row.line} (each must be frontal, positive for exactly one of "
          f"{', '.join(FIVE_CLASSES)} and uncertain for none)")
    if row.relative in seen:
      raise errors.DataError(f"--five_by_200={path}, line {line}: {cell!r} is listed twice")
    seen.add(row.relative)
    chosen.append(row)
  return sorted(chosen, key=lambda r: (FIVE_CLASSES.index(five_by_200_class(r)), r.path))


def studies_of(split: str, rows: list[Row], image_root: str,
               out: listing.Listing) -> list[listing.Study]:
  """Groups image rows into studies (one per study and label vector), sorted by study; missing
  files and Paths that name no image become rejects in `out`."""
  groups, seen = collections.defaultdict(list), set()
  for row in rows:
    if row.path in seen:
      out.filtered["listed twice in the index"] = out.filtered.get("listed twice in the index",
                                                                   0) + 1
      continue
    seen.add(row.path)
    if not row.relative:
      out.rejects.append(listing.Reject(split, "", row.path, row.path,
                                        "Path is not .../patientN/studyN/<file>"))
      continue
    groups[(row.patient, row.study, row.labels.tobytes())].append(row)
  studies = []
  for (patient, study, _), members in sorted(groups.items()):
    refs = []
    for row in sorted(members, key=lambda r: r.path):
      path = os.path.join(image_root, *row.relative.split("/"))
      if os.path.exists(path):
        refs.append(listing.ImageRef(image_id=row.path, path=path, view=row.view))
      else:
        out.rejects.append(listing.Reject(split, study, row.path, path, "file not found"))
    if refs:
      studies.append(listing.Study(study_id=study, patient_id=patient, images=refs,
                                   labels=members[0].labels))
  return studies


class ClipmedChexpert(base.RealDatasetBuilder):
  """CheXpert-v1.0(-small) images with their CheXpert labels (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  DATASET = "chexpert"
  HOMEPAGE = HOMEPAGE
  CLASS_NAMES = chexpert.CATEGORIES
  HAS_REPORTS = False
  OPTIONS = {"five_by_200": ("", None)}

  def list_studies(self, manual_dir: str) -> listing.Listing:
    index_dir = find_index_dir(manual_dir)
    if not index_dir:  # raises, naming the accepted places of train.csv
      self.find(manual_dir, ["train.csv"] + [f"{t}/train.csv" for t in TOP_FOLDERS],
                "the index train.csv")
    out = listing.Listing(splits={"train": [], "validation": [], TEST_5X200: []},
                          notes=[f"index files and images from {index_dir}"])
    others = [t for t in TOP_FOLDERS if os.path.join(manual_dir, t) != index_dir
              and os.path.isfile(os.path.join(manual_dir, t, "train.csv"))]
    if index_dir != manual_dir and others:
      out.notes.append(f"also found {', '.join(others)} in {manual_dir}; point --manual_dir at "
                       "it to prepare that one instead")
    rows = {}
    for name, split in INDEX_FILES:
      path = self.find(index_dir, name, f"the index {name}")
      rows[split] = read_index(path)
    train_csv = os.path.join(index_dir, "train.csv")

    chosen_list = self.options["five_by_200"]
    if chosen_list:
      test = read_five_by_200(self._user_file(chosen_list, manual_dir), rows["train"], train_csv)
      counts = collections.Counter(five_by_200_class(r) for r in test)
      out.notes.append(f"{TEST_5X200} from {chosen_list}: "
                       + ", ".join(f"{counts[n]} {n}" for n in FIVE_CLASSES))
    else:
      test, notes = draw_five_by_200(rows["train"], self.builder_config.seed)
      out.notes += notes
    test_ids = {r.path for r in test}
    test_studies = {r.study for r in test}
    train = [r for r in rows["train"] if r.study not in test_studies]
    companions = len(rows["train"]) - len(train) - len(test_ids)
    if companions:
      out.filtered[f"other image of a {TEST_5X200} study (kept out of train)"] = companions
    for split, split_rows in (("train", train), ("validation", rows["validation"]),
                              (TEST_5X200, test)):
      out.splits[split] = studies_of(split, split_rows, index_dir, out)
    return out

  def _user_file(self, value: str, manual_dir: str) -> str:
    """--five_by_200 as given, or relative to manual_dir."""
    for path in (os.path.expanduser(value), os.path.join(manual_dir, value)):
      if os.path.isfile(path):
        return path
    raise errors.FileError(f"{self.DATASET}: --five_by_200={value} is not a file; give a CSV "
                           "with a Path column (e.g. GLoRIA's chexpert_5x200.csv), or leave it "
                           "out to draw the 5x200 images with --seed")
