"""input_pipeline/images.py: every format -> 8-bit grey, resized; errors name the file."""

import os
import pickle
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image, JpegImagePlugin

from clipmed.errors import UserError
from input_pipeline import images
from tests.fakes import images as fakes


def _load(path, max_size=512):
  return images.load_grayscale(str(path), max_size=max_size)


def _lanczos(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Reference resize of uint8 [H, W] to (h, w) with plain LANCZOS."""
  return np.asarray(Image.fromarray(array).resize((size[1], size[0]), Image.Resampling.LANCZOS))


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _linear(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """The expected 8-bit output of a linear map [lo, hi] -> [0, 255] with clipping."""
  return np.rint(np.clip((values.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255)


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
  """DICOM PS3.3 C.11.2.1.2 LINEAR window to [0, 255], written out independently of pydicom."""
  x = values.astype(np.float64)
  c, w = center - 0.5, width - 1
  y = ((x - c) / w + 0.5)
  y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, y))
  return np.rint(y * 255)


def _gradient12(h: int = 8) -> np.ndarray:
  """uint16 [h, 256]: every column a stored value 0, 16, ..., 4080 (12-bit)."""
  return np.tile((np.arange(256) * 16).astype(np.uint16), (h, 1))


@pytest.mark.parametrize("h, w, max_size, expected", [
    (3000, 2500, 512, (512, 427)), (2500, 3000, 512, (427, 512)), (100, 80, 512, (100, 80)),
    (512, 300, 512, (512, 300)), (1000, 1, 512, (512, 1)), (1024, 1024, 224, (224, 224))])
def test_target_size(h, w, max_size, expected):
  assert images.target_size(h, w, max_size) == expected


def test_target_size_rejects_nonpositive():
  with pytest.raises(ValueError, match="max_size"):
    images.target_size(10, 10, 0)


def test_jpeg_round_trip(tmp_path):
  array = fakes.chest_like(300, 240, seed=1)
  out, info = _load(fakes.write_jpeg(tmp_path / "a.jpg", array))
  assert out.dtype == np.uint8 and out.shape == (300, 240)
  assert _mean_abs(out, array) < 1.5  # JPEG quality 95
  assert info["format"] == "jpeg" and info["original_size"] == (300, 240)
  assert info["windowing"] == "none" and info["bit_depth"] == 8 and not info["inverted"]


@pytest.mark.parametrize("transpose", [False, True])
def test_large_jpeg_is_scaled_in_the_dct_and_matches_a_full_resize(tmp_path, transpose,
                                                                    monkeypatch):
  decoded_sizes = []
  draft = JpegImagePlugin.JpegImageFile.draft

  def recording_draft(self, mode, size):
    result = draft(self, mode, size)
    decoded_sizes.append(self.size)
    return result

  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
  array = fakes.chest_like(2000, 1600, seed=2)
  array = array.T.copy() if transpose else array
  out, info = _load(fakes.write_jpeg(tmp_path / "a.jpg", array))
  # 1/2 is the smallest DCT scale that keeps both sides >= the 512x410 target (1/4 would not).
  assert decoded_sizes == [(1000, 800) if transpose else (800, 1000)]
  expected = (410, 512) if transpose else (512, 410)
  assert out.shape == expected and info["original_size"] == array.shape
  assert _mean_abs(out, _lanczos(array, expected)) < 1.5
  marker = out[:40, :40] if not transpose else out[:40, :40].T  # the white square at top-left
  assert marker.max() > 240 and out[-40:, -40:].max() < 200


def test_jpeg_exif_orientation_is_applied(tmp_path):
  array = fakes.chest_like(200, 160, seed=3)
  exif = Image.Exif()
  exif[0x0112] = 6  # stored rotated: display rotated 90 degrees clockwise
  path = tmp_path / "rotated.jpg"
  Image.fromarray(array).save(path, format="JPEG", quality=95, exif=exif)
  out, info = _load(path)
  rotated = np.asarray(Image.fromarray(array).transpose(Image.Transpose.ROTATE_270))
  assert out.shape == (160, 200) and _mean_abs(out, rotated) < 1.5
  assert any("EXIF orientation 6" in note for note in info["notes"])


def test_png8_is_exact(tmp_path):
  array = fakes.chest_like(200, 150, seed=4)
  out, info = _load(fakes.write_png(tmp_path / "a.png", array))
  np.testing.assert_array_equal(out, array)
  assert info["format"] == "png" and info["photometric"] == "L" and info["windowing"] == "none"


def test_png16_min_max_scaled(tmp_path):
  # 12-bit data in a 16-bit PNG, offset: the bit depth's range would give a nearly black image.
  values = (fakes.chest_like(200, 150, seed=5, bits=12) + 1000).astype(np.uint16)
  out, info = _load(fakes.write_png16(tmp_path / "a16.png", values))
  expected = _linear(values, values.min(), values.max())
  assert np.abs(out - expected).max() <= 1 and out.min() == 0 and out.max() == 255
  assert info["bit_depth"] == 16 and info["windowing"] == "minmax"
  assert info["photometric"].startswith("I;16")


def test_32bit_tiff_min_max_scaled(tmp_path):
  values = fakes.chest_like(120, 100, seed=6, bits=16).astype(np.int32) - 30000
  path = tmp_path / "a.tif"
  Image.fromarray(values).save(path, format="TIFF")
  out, info = _load(path)
  assert info["format"] == "tiff" and info["photometric"] == "I"
  assert np.abs(out - _linear(values, values.min(), values.max())).max() <= 1


def test_opaque_rgba_equals_grey(tmp_path):
  array = fakes.chest_like(180, 150, seed=7)
  out, info = _load(fakes.write_rgba_png(tmp_path / "a.png", array))
  np.testing.assert_array_equal(out, array)
  assert info["photometric"] == "RGBA" and info["notes"] == []


def test_translucent_alpha_is_ignored_not_composited(tmp_path):
  array = fakes.chest_like(180, 150, seed=7)
  alpha = np.full(array.shape, 255, np.uint8)
  alpha[:, :75] = 0
  out, info = _load(fakes.write_rgba_png(tmp_path / "a.png", array, alpha=alpha))
  np.testing.assert_array_equal(out, array)  # compositing onto black would zero the left half
  assert any("alpha" in note for note in info["notes"])


def test_rgb_is_converted_to_luma(tmp_path):
  rgb = np.zeros((30, 90, 3), np.uint8)
  rgb[:, :30, 0] = 255
  rgb[:, 30:60, 1] = 255
  rgb[:, 60:, 2] = 255
  out, _ = _load(fakes.write_png(tmp_path / "rgb.png", rgb))
  assert (out[0, 0], out[0, 45], out[0, 80]) == (76, 150, 29)  # ITU-R 601: .299 R + .587 G + .114 B


def test_palette_png_uses_the_palette(tmp_path):
  array = fakes.chest_like(100, 90, seed=8)
  path = fakes.write_palette_png(tmp_path / "p.png", array)
  assert Image.open(path).mode == "P"
  out, _ = _load(path)
  np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("writer", ["jpeg", "png", "dicom"])
def test_never_upscales(tmp_path, writer):
  array = fakes.chest_like(100, 80, seed=9)
  if writer == "jpeg":
    path = fakes.write_jpeg(tmp_path / "s.jpg", array)
  elif writer == "png":
    path = fakes.write_png(tmp_path / "s.png", array)
  else:
    path = fakes.write_dicom(tmp_path / "s.dcm", array, bits_stored=8)
  out, _ = _load(path, max_size=512)
  assert out.shape == (100, 80)


@pytest.mark.parametrize("max_size", [64, 300])
def test_longest_side_and_aspect(tmp_path, max_size):
  array = fakes.chest_like(600, 350, seed=10)
  out, _ = _load(fakes.write_png(tmp_path / "a.png", array), max_size=max_size)
  assert max(out.shape) == max_size and out.shape[0] > out.shape[1]
  assert abs(out.shape[1] / out.shape[0] - 350 / 600) < 1.0 / max_size + 1e-9


def test_dicom_fixture_is_a_conformant_file(tmp_path):
  path = fakes.write_dicom(tmp_path / "a.dcm", fakes.chest_like(40, 30, bits=12), bits_stored=12,
                           modality="CR", view_position="AP")
  ds = pydicom.dcmread(path)  # no force: preamble, DICM and file meta are present
  assert (ds.Modality, ds.ViewPosition, ds.Rows, ds.Columns) == ("CR", "AP", 40, 30)
  assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
  assert ds.SOPInstanceUID and ds.StudyInstanceUID and ds.SeriesInstanceUID and ds.PatientID
  np.testing.assert_array_equal(ds.pixel_array, fakes.chest_like(40, 30, bits=12))


def test_dicom_without_window_uses_percentiles(tmp_path):
  values = fakes.chest_like(200, 160, seed=11, bits=16)
  out, info = _load(fakes.write_dicom(tmp_path / "a.dcm", values, bits_stored=16))
  lo, hi = np.percentile(values, images.PERCENTILES)
  assert np.abs(out - _linear(values, lo, hi)).max() <= 1
  assert info["windowing"] == "percentile" and info["bit_depth"] == 16
  assert (out == 0).mean() >= 0.004 and (out == 255).mean() >= 0.004  # the clipped 0.5% tails


@pytest.mark.parametrize("window", [None, (30000.0, 40000.0)])
def test_monochrome1_is_inverted(tmp_path, window):
  values = fakes.chest_like(200, 160, seed=12, bits=16)
  mono2, info2 = _load(fakes.write_dicom(tmp_path / "m2.dcm", values, window=window))
  mirrored = None if window is None else (65535 - window[0], window[1])
  mono1, info1 = _load(fakes.write_dicom(tmp_path / "m1.dcm", 65535 - values,
                                         photometric="MONOCHROME1", window=mirrored))
  assert info1["inverted"] and not info2["inverted"] and info1["windowing"] == info2["windowing"]
  assert np.abs(mono1.astype(int) - mono2).max() <= 1
  # Bone bright: the mediastinum (centre column) is brighter than a lung.
  assert mono1[60:120, 75:85].mean() > mono1[60:120, 30:45].mean() + 50


def test_dicom_window_clips_outside(tmp_path):
  values = _gradient12()
  out, info = _load(fakes.write_dicom(tmp_path / "w.dcm", values, bits_stored=12,
                                      window=(2048, 1024)))
  assert info["windowing"] == "window"
  assert (out[:, values[0] < 1536] == 0).all() and (out[:, values[0] > 2560] == 255).all()
  assert np.abs(out - _window(values, 2048, 1024)).max() <= 1
  assert 120 <= out[0, 128] <= 135  # stored 2048: the window centre is mid-grey


def test_dicom_rescale_then_window(tmp_path):
  values = _gradient12()
  out, info = _load(fakes.write_dicom(tmp_path / "r.dcm", values, bits_stored=12,
                                      rescale=(2.0, -1024.0), window=(1000.0, 2000.0)))
  expected = _window(values * 2.0 - 1024.0, 1000.0, 2000.0)
  assert info["windowing"] == "window" and np.abs(out - expected).max() <= 1
  assert out[0, values[0].astype(int) * 2 - 1024 < 0].max() == 0  # rescaled below the window


def test_dicom_voi_lut_is_preferred_over_the_window(tmp_path):
  values = _gradient12()
  table = np.rint(np.sqrt(np.arange(4096) / 4095) * 40000 + 1000).astype(np.uint16)  # [4096]
  out, info = _load(fakes.write_dicom(tmp_path / "l.dcm", values, bits_stored=12,
                                      voi_lut=(0, table), window=(100.0, 50.0)))
  assert info["windowing"] == "voi_lut"
  expected = _linear(table[values], table.min(), table.max())
  assert np.abs(out - expected).max() <= 1


def test_dicom_signed_12bit(tmp_path):
  values = (_gradient12().astype(np.int16) - 2048)  # [-2048, 2032]
  out, info = _load(fakes.write_dicom(tmp_path / "s.dcm", values, bits_stored=12, signed=True,
                                      window=(0.0, 2000.0)))
  assert info["windowing"] == "window"
  assert np.abs(out - _window(values, 0.0, 2000.0)).max() <= 1
  assert out[0, 0] == 0 and out[0, -1] == 255


def test_dicom_jpeg_baseline_decodes(tmp_path):
  array = fakes.chest_like(1024, 1024, seed=13)
  path = fakes.write_dicom(tmp_path / "c.dcm", array, bits_stored=8, compressed="jpeg_baseline")
  ds = pydicom.dcmread(path, stop_before_pixels=True)
  assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
  assert os.path.getsize(path) < array.size / 2  # really compressed
  out, info = _load(path, max_size=1024)
  assert out.shape == (1024, 1024) and _mean_abs(out, array) < 1.5
  assert info["windowing"] == "none" and "JPEG Baseline" in " ".join(info["notes"])
  small, _ = _load(path, max_size=512)
  assert small.shape == (512, 512) and _mean_abs(small, _lanczos(array, (512, 512))) < 1.5


def test_dicom_multiframe_takes_the_first_frame(tmp_path):
  frame = fakes.chest_like(120, 100, seed=14, bits=12)
  single, _ = _load(fakes.write_dicom(tmp_path / "one.dcm", frame, bits_stored=12))
  multi, info = _load(fakes.write_dicom(tmp_path / "two.dcm", np.stack([frame, frame[::-1]]),
                                        bits_stored=12))
  np.testing.assert_array_equal(multi, single)
  assert "first of 2 frames" in info["notes"]


@pytest.mark.parametrize("name", ["bare.dcm", "bare"])
def test_dicom_without_preamble(tmp_path, name):
  values = fakes.chest_like(120, 100, seed=15, bits=12)
  reference, _ = _load(fakes.write_dicom(tmp_path / "ref.dcm", values, bits_stored=12))
  path = fakes.write_dicom(tmp_path / name, values, bits_stored=12, preamble=False)
  with open(path, "rb") as f:
    assert f.read()[128:132] != b"DICM"
  out, info = _load(path)
  np.testing.assert_array_equal(out, reference)
  assert info["format"] == "dicom"


def test_dicom_resized_like_the_float_image(tmp_path):
  values = fakes.chest_like(1200, 1000, seed=16, bits=16)
  out, _ = _load(fakes.write_dicom(tmp_path / "big.dcm", values))
  lo, hi = np.percentile(values, images.PERCENTILES)
  assert out.shape == (512, 427)
  assert _mean_abs(out, _lanczos(_linear(values, lo, hi).astype(np.uint8), (512, 427))) < 1.0


def _expect_error(path, reason: str):
  with pytest.raises(images.ImageError) as caught:
    images.load_grayscale(str(path), max_size=512)
  message = str(caught.value)
  assert str(path) in message and reason in caught.value.reason and "\n" not in message
  return caught.value


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")  # pydicom, on the cut
@pytest.mark.parametrize("kind", ["jpeg", "png", "dicom", "dicom_jpeg"])
def test_truncated_files_raise(tmp_path, kind):
  array = fakes.chest_like(300, 240, seed=17)
  if kind == "jpeg":
    source = fakes.write_jpeg(tmp_path / "src.jpg", array)
  elif kind == "png":
    source = fakes.write_png(tmp_path / "src.png", array)
  elif kind == "dicom":
    source = fakes.write_dicom(tmp_path / "src.dcm", array.astype(np.uint16) * 16, bits_stored=12)
  else:
    source = fakes.write_dicom(tmp_path / "src.dcm", array, bits_stored=8,
                               compressed="jpeg_baseline")
  path = fakes.write_truncated(tmp_path / ("cut" + os.path.splitext(source)[1]), source)
  _expect_error(path, "truncated")


@pytest.mark.parametrize("name, reason", [
    ("noise.png", "not an image format"), ("noise.jpg", "not an image format"),
    ("noise", "not an image format"), ("noise.dcm", "not a DICOM file")])
def test_garbage_bytes_raise(tmp_path, name, reason):
  path = tmp_path / name
  path.write_bytes(np.random.default_rng(0).bytes(5000))
  _expect_error(path, reason)


def test_corrupt_jpeg_body_raises(tmp_path):
  with open(fakes.write_jpeg(tmp_path / "a.jpg", fakes.chest_like(64, 64)), "rb") as f:
    data = bytearray(f.read())
  data[20:] = bytes(len(data) - 20)  # keep the SOI marker, zero the rest
  path = tmp_path / "zeroed.jpg"
  path.write_bytes(bytes(data))
  _expect_error(path, "image header is corrupt or truncated (starts like a JPEG)")


def test_missing_empty_and_directory_paths_raise(tmp_path):
  error = _expect_error(tmp_path / "nope.jpg", "file not found")
  assert isinstance(error, ValueError) and isinstance(error, UserError)
  (tmp_path / "empty.png").write_bytes(b"")
  _expect_error(tmp_path / "empty.png", "file is empty")
  _expect_error(tmp_path, "directory")


def test_image_error_pickles():
  error = pickle.loads(pickle.dumps(images.ImageError("/data/a.dcm", "file not found")))
  assert (error.path, error.reason) == ("/data/a.dcm", "file not found")
  assert str(error).startswith("cannot read image /data/a.dcm: file not found;")


def test_dicom_with_empty_rescale_tags_is_read_as_identity(tmp_path):
  values = _gradient12()
  reference, _ = _load(fakes.write_dicom(tmp_path / "ref.dcm", values, bits_stored=12,
                                         window=(2048, 1024)))
  path = fakes.write_dicom(tmp_path / "empty.dcm", values, bits_stored=12, window=(2048, 1024),
                           rescale=(1, 0))
  ds = pydicom.dcmread(path)
  ds.RescaleIntercept = None
  ds.save_as(path)
  out, info = _load(path)
  np.testing.assert_array_equal(out, reference)
  assert "empty RescaleIntercept ignored" in info["notes"]


def test_8bit_monochrome1_dicom_is_inverted_as_stored(tmp_path):
  array = fakes.chest_like(64, 48, seed=22)
  out, info = _load(fakes.write_dicom(tmp_path / "m1.dcm", 255 - array, bits_stored=8,
                                      photometric="MONOCHROME1"))
  np.testing.assert_array_equal(out, array)
  assert info["windowing"] == "none" and info["inverted"]


def test_dicom_without_pixel_data_raises(tmp_path):
  path = fakes.write_dicom(tmp_path / "a.dcm", fakes.chest_like(20, 20), bits_stored=8)
  ds = pydicom.dcmread(path)
  del ds.PixelData
  ds.save_as(path)
  _expect_error(path, "DICOM has no pixel data")


@pytest.mark.parametrize("kind", ["jpeg", "dicom"])
def test_deterministic_bytes(tmp_path, kind):
  if kind == "jpeg":
    path = fakes.write_jpeg(tmp_path / "a.jpg", fakes.chest_like(900, 700, seed=18))
  else:
    path = fakes.write_dicom(tmp_path / "a.dcm", fakes.chest_like(900, 700, seed=18, bits=16))
  first = images.encode_png(_load(path)[0])
  second = images.encode_png(_load(path)[0])
  assert first == second and first[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_encode_decode_round_trip():
  array = fakes.chest_like(64, 48, seed=19)
  data = images.encode_png(array)
  np.testing.assert_array_equal(images.decode_png(data), array)
  assert len(data) < zlib.compress(array.tobytes(), 0).__len__()  # compressed at all
  with pytest.raises(ValueError, match="uint8"):
    images.encode_png(array.astype(np.uint16))


def test_chest_like_is_deterministic_and_seeded():
  a, b = fakes.chest_like(64, 48, seed=1), fakes.chest_like(64, 48, seed=1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, fakes.chest_like(64, 48, seed=2))
  assert fakes.chest_like(64, 48, bits=12).max() <= 4095


def test_measure_speed_runs(tmp_path):
  path = fakes.write_jpeg(tmp_path / "a.jpg", fakes.chest_like(1000, 800, seed=20))
  result = images.measure_speed(path, max_size=256, repeat=2)
  assert result["images_per_s"] > 0 and result["best_images_per_s"] >= result["images_per_s"]
  assert result["input_size"] == (1000, 800) and result["output_size"] == (256, 205)
  assert result["png_bytes"] > 1000


def test_speed_script_prints_rates(tmp_path, capsys):
  from scripts import measure_image_speed  # pylint: disable=g-import-not-at-top
  path = fakes.write_jpeg(tmp_path / "a.jpg", fakes.chest_like(600, 500, seed=21))
  assert measure_image_speed.main([path, "--max_size", "128", "--repeat", "1"]) == 0
  out = capsys.readouterr().out
  assert "500x600" in out and "-> 107x128 PNG" in out and "images/s per core" in out
