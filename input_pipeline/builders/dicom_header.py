"""The header fields a listing needs from a download that is DICOM only, read without the pixels.

RSNA Pneumonia and SIIM-ACR keep the projection (ViewPosition) and the patient (PatientID) in
each file's header, not in an index. `read_tags` parses a header up to the pixel data and keeps
only the asked-for elements (about a millisecond per file), so listing tens of thousands of
files costs seconds; the pixels are decoded later by input_pipeline.images like every image.
"""

from collections.abc import Sequence

import pydicom

from input_pipeline.builders import listing


def read_tags(path: str, keywords: Sequence[str]) -> dict[str, str] | None:
  """The values of `keywords` in the DICOM header of `path`, or None when it cannot be parsed.

  Args:
    path: a DICOM file (with or without the 128-byte preamble).
    keywords: DICOM keywords, e.g. ("ViewPosition", "PatientID").

  Returns:
    keyword -> value as stripped text ("" when the element is absent or empty); None when the
    file is missing or its header is not readable DICOM (the caller decides: the image decoder
    gives the precise reason when the file is decoded).
  """
  try:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(keywords),
                         force=True)
  except Exception:  # pylint: disable=broad-except
    # pydicom raises many types (InvalidDicomError, EOFError, struct.error, OSError...).
    return None
  return {keyword: str(ds.get(keyword, "") or "").strip() for keyword in keywords}


def frontal_view(view_position: str) -> str:
  """The stored view of an image of a frontal-only dataset, from its DICOM ViewPosition.

  PA and AP as written; a lateral label (LATERAL, LL, RL) as written, so it can be filtered;
  anything else (absent, blank, a vendor's free text) is "FRONTAL": the dataset says the image
  is frontal, only AP/PA is unknown.
  """
  view = view_position.strip().upper()
  return view if view in listing.FRONTAL_VIEWS + listing.LATERAL_VIEWS else "FRONTAL"
