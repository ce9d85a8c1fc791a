"""Writes a MIMIC-CXR-JPG-like download at real resolution, to measure preparation speed.

    python scripts/make_fake_mimic.py /tmp/fake_mimic --studies 200 --size 3000x2500
    python -m clipmed.benchmark prepare --dataset mimic_cxr --manual_dir /tmp/fake_mimic

The layout of tests/fakes/mimic_cxr.py (index files, files/pXX/pSUBJECT/sSTUDY/*.jpg,
mimic-cxr-reports.zip) with `--studies` studies of 1-2 images (about 1.6 frontal images per study
are kept, as in MIMIC-CXR: 2 of 3 studies have a lateral too), JPEG quality 95 chest-like images
(about 1.5 MB at 3000 x 2500, MIMIC-CXR-JPG's mean file size), and varied reports written like
MIMIC-CXR's (SynthCXR's report generator for the FINDINGS / IMPRESSION text). Not a dataset to
train on: for timing only.
"""

import argparse
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clipmed.report import chexpert  # noqa: E402
from clipmed.report import sections  # noqa: E402
from input_pipeline.synthcxr import generate  # noqa: E402
from tests.fakes import images as fake_images  # noqa: E402
from tests.fakes import mimic_cxr as fake  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="directory to write (the fake manual_dir)")
  parser.add_argument("--studies", type=int, default=200)
  parser.add_argument("--size", default="3000x2500", help="HEIGHTxWIDTH of the images")
  args = parser.parse_args()
  height, width = (int(v) for v in args.size.split("x"))
  os.makedirs(args.out, exist_ok=True)
  base = fake_images.chest_like(height, width, seed=0)
  split_rows, meta_rows, label_rows = [], [], []
  with zipfile.ZipFile(os.path.join(args.out, "mimic-cxr-reports.zip"), "w") as reports:
    for n in range(args.studies):
      subject, study = f"1{n:07d}", f"5{n:07d}"
      views = ["PA", "LATERAL"] if n % 3 else ["AP"]
      for k, view in enumerate(views):
        dicom = fake.dicom_id(f"{n:x}{k}")
        split_rows.append([dicom, study, subject, "train"])
        meta_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, str(height),
                          str(width), "21800506", "213014.531"])
        pixels = base if k else fake_images.chest_like(height, width, seed=n)
        fake_images.write_jpeg(os.path.join(args.out, "files", f"p{subject[:2]}",
                                            f"p{subject}", f"s{study}", f"{dicom}.jpg"), pixels)
      text = sections.split_sections(generate.generate_report(0, "train", n))
      reports.writestr(f"files/p{subject[:2]}/p{subject}/s{study}.txt",
                       fake.REPORT.format(findings=text.get("findings", ""),
                                          impression=text.get("impression", "")))
      label_rows.append([subject, study] + [""] * len(chexpert.CATEGORIES))
  header = ["subject_id", "study_id"] + sorted(chexpert.CATEGORIES)
  fake.write_gz_csv(os.path.join(args.out, "mimic-cxr-2.0.0-split.csv.gz"),
                    ["dicom_id", "study_id", "subject_id", "split"], split_rows)
  fake.write_gz_csv(os.path.join(args.out, "mimic-cxr-2.0.0-metadata.csv.gz"),
                    ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                     "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime"], meta_rows)
  fake.write_gz_csv(os.path.join(args.out, "mimic-cxr-2.0.0-chexpert.csv.gz"), header,
                    label_rows)
  print(f"wrote {args.studies} studies ({len(split_rows)} images) to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
