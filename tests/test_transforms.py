"""Tests for input_pipeline.transforms (image warps, jitter, tokenisation)."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image
from tests.conftest import make_wordpiece_tokenizer

from input_pipeline import transforms

TEXTS = ["The heart is enlarged.", "No pneumothorax or pleural effusion.", "Lungs are clear."]


@pytest.fixture(scope="module")
def hf_tokenizer():
  return make_wordpiece_tokenizer(TEXTS)


def _image(size=32):
  yy, xx = np.mgrid[:size, :size]
  return ((xx * 7 + yy * 3) % 256).astype(np.uint8)


def test_text_tokenizer_matches_transformers_padding_and_truncation(hf_tokenizer):
  for length in (4, 16):
    tok = transforms.TextTokenizer(hf_tokenizer, length)
    for text in TEXTS:
      ids, mask = tok(text)
      want = hf_tokenizer(text, padding="max_length", truncation=True, max_length=length)
      assert ids.dtype == mask.dtype == np.int32 and ids.shape == (length,)
      np.testing.assert_array_equal(ids, want["input_ids"])
      np.testing.assert_array_equal(mask, want["attention_mask"])


def test_text_tokenizer_pickles_for_worker_processes(hf_tokenizer):
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  clone = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(clone(TEXTS[0])[0], tok(TEXTS[0])[0])


def test_text_tokenizer_rejects_a_slow_tokenizer():
  with pytest.raises(TypeError, match="fast tokenizer"):
    transforms.TextTokenizer(object(), 8)


def test_identity_crop_reproduces_the_image():
  image = _image()
  params = transforms.AugmentParams(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                                    rotation_degrees=0.0)
  affine = transforms.sample_crop_affine(np.random.default_rng(0), image.shape, 32, params)
  np.testing.assert_allclose(affine, [[1, 0, 0], [0, 1, 0]], atol=1e-9)
  np.testing.assert_array_equal(transforms.warp_image(image, affine, 32), image)


def test_downscaling_by_3_averages_instead_of_aliasing():
  image = np.zeros((96, 96), np.uint8)
  image[:, ::3] = 255  # one bright column in three; point-sampling would see only dark ones
  out = transforms.warp_image(image, transforms.resize_affine(image.shape, 32), 32)
  assert out.shape == (32, 32)
  assert np.all(np.abs(out.astype(int) - 85) <= 1)


def test_random_crop_stays_within_the_configured_ranges():
  params = transforms.AugmentParams(crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1),
                                    rotation_degrees=5.0)
  rng = np.random.default_rng(0)
  for _ in range(200):
    affine = transforms.sample_crop_affine(rng, (100, 100), 50, params)
    linear = affine[:, :2] * 50  # columns: the crop's width and height vectors
    w, h = np.linalg.norm(linear, axis=0)
    assert w <= 100 + 1e-6 and h <= 100 + 1e-6  # clipped to the image
    assert 0.8e4 - 1e-6 <= w * h <= 1e4 + 1e-6
    assert 0.9 - 1e-9 <= w / h <= 1.1 + 1e-9
    angle = np.degrees(np.arctan2(linear[1, 0], linear[0, 0]))
    assert abs(angle) <= 5.0 + 1e-9


def test_jitter_keeps_pixels_in_unit_range_and_is_identity_at_zero():
  image = _image()
  rng = np.random.default_rng(0)
  out = transforms.jitter_brightness_contrast(image, rng, transforms.AugmentParams())
  assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
  still = transforms.jitter_brightness_contrast(
      image, rng, transforms.AugmentParams(brightness=0.0, contrast=0.0))
  np.testing.assert_allclose(still, image / 255.0, atol=1e-6)


def test_normalize_repeats_channels():
  out = transforms.normalize_image(np.full((4, 4), 0.75, np.float32), mean=0.5, std=0.25,
                                   channels=3)
  assert out.shape == (4, 4, 3)
  np.testing.assert_allclose(out, 1.0)


def test_decode_image_accepts_png_and_arrays_and_names_bad_records():
  image = _image()
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  np.testing.assert_array_equal(
      transforms.decode_image(buf.getvalue(), study_id="s1", split="train"), image)
  np.testing.assert_array_equal(
      transforms.decode_image(image[..., None], study_id="s1", split="train"), image)
  with pytest.raises(transforms.ImageDecodeError, match=r"study 's9' in split 'test'"):
    transforms.decode_image(b"not an image", study_id="s9", split="test")


def test_augment_config_errors_name_the_field():
  with pytest.raises(ValueError, match="crop_scale"):
    transforms.AugmentParams.from_config(dict(crop_scale=(0.5, 1.5), crop_ratio=(1, 1),
                                              rotation_degrees=0, brightness=0, contrast=0))
