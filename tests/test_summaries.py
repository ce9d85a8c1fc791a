"""TensorBoard summaries beyond scalars (clipmed/summaries.py), read back from the event files of
a tiny training run."""

import os

import numpy as np

from clipmed import checkpointing, summaries


def _events(workdir):
  from tensorboard.backend.event_processing import event_accumulator as ea  # pylint: disable=g-import-not-at-top
  out = []
  for name in sorted(os.listdir(workdir)):
    if name.startswith("events.out.tfevents"):
      acc = ea.EventAccumulator(os.path.join(workdir, name),
                                size_guidance={ea.TENSORS: 0, ea.IMAGES: 0, ea.HISTOGRAMS: 0})
      acc.Reload()
      out.append(acc)
  return out


def _tensor(accs, tag):
  for acc in accs:
    if tag in acc.Tags()["tensors"]:
      return acc.Tensors(tag)
  raise AssertionError(f"no summary {tag}; tags: {[a.Tags()['tensors'] for a in accs]}")


def _plugin(accs, tag):
  for acc in accs:
    if tag in acc.Tags()["tensors"]:
      return acc.SummaryMetadata(tag).plugin_data.plugin_name
  return None


def test_event_files_hold_images_texts_and_histograms(tiny_workdir):
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  accs = _events(tiny_workdir)
  prefix = summaries.PREFIX
  images = [f"{prefix}/images/samples", f"{prefix}/images/logits",
            f"{prefix}/images/targets/text", f"{prefix}/images/roc/pleural_effusion"]
  for tag in images:
    assert _plugin(accs, tag) == "images", tag
    event = _tensor(accs, tag)[-1]
    assert event.step == 6
    # An image summary tensor: [width, height, encoded PNG, ...].
    encoded = tensor_util.make_ndarray(event.tensor_proto)
    assert encoded[2].startswith(b"\x89PNG"), tag
  width, height = (int(v) for v in tensor_util.make_ndarray(
      _tensor(accs, f"{prefix}/images/logits")[-1].tensor_proto)[:2])
  assert width == height == 16 * 8  # the 16 sample studies, 8 pixels per cell

  config = checkpointing.read_run_config(tiny_workdir)
  import input_pipeline  # pylint: disable=g-import-not-at-top
  meta = input_pipeline.open_dataset(config.data).split_metadata("test")
  text = _tensor(accs, f"{prefix}/text/samples")[-1]
  assert _plugin(accs, f"{prefix}/text/samples") == "text"
  body = tensor_util.make_ndarray(text.tensor_proto).item().decode()
  assert meta["reports"][0] in body and meta["study_ids"][0] in body and "hard negative" in body
  table = tensor_util.make_ndarray(
      _tensor(accs, f"{prefix}/text/auroc_table")[-1].tensor_proto).item().decode()
  assert "| pleural_effusion |" in table
  for name in ("logit_scale", "logits", "image_norm", "text_norm"):
    assert _plugin(accs, f"{prefix}/histograms/{name}") == "histograms", name
  norms = tensor_util.make_ndarray(
      _tensor(accs, f"{prefix}/histograms/image_norm")[-1].tensor_proto)  # [buckets, 3]
  assert norms[:, 2].sum() == 16


def test_roc_points_of_a_hand_computed_case():
  positive = np.array([True, False, True, False])
  scores = np.array([0.9, 0.8, 0.8, 0.1])  # a tie between a positive and a negative
  fpr, tpr = summaries.roc_points(positive, scores)
  np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
  np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
