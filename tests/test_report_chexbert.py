"""CheXbert adapter: checkpoint name mapping onto the project's Flax BERT (tiny random model)."""

import numpy as np
import pytest

from clipmed.report import chexbert_labeler
from clipmed.report import chexpert

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = ["no", "pneumothorax", "mild", "cardiomegaly", "effusion", "small", "left", "."]


class _TinyCheXbert(torch.nn.Module):
  """The checkpoint's layout: `bert` plus 13 four-class heads and one two-class head."""

  def __init__(self, config):
    super().__init__()
    self.bert = transformers.BertModel(config)
    hidden = config.hidden_size
    self.linear_heads = torch.nn.ModuleList(
        [torch.nn.Linear(hidden, 4) for _ in range(13)] + [torch.nn.Linear(hidden, 2)])

  def forward(self, ids, mask):
    cls_state = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    return [head(cls_state) for head in self.linear_heads]


@pytest.fixture(scope="module")
def tiny():
  torch.manual_seed(0)
  config = transformers.BertConfig(
      vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0)
  model = _TinyCheXbert(config).eval()
  state = {"module." + k: v for k, v in model.state_dict().items()}
  return model, state


def test_converted_model_matches_torch(tiny):
  model, state = tiny
  params, heads, arch = chexbert_labeler.convert_state_dict(state, num_heads=4)
  assert len(heads) == 14
  assert arch["num_layers"] == 2 and arch["hidden_size"] == 32
  labeler = chexbert_labeler.CheXbertLabeler(params=params, heads=heads, tokenizer=None,
                                     architecture=arch)
  ids = np.array([[2, 7, 8, 9, 3, 0, 0], [2, 10, 11, 12, 9, 6, 3]], np.int32)
  mask = (ids > 0).astype(np.int32)
  got = labeler.logits(ids, mask)
  with torch.no_grad():
    want = model(torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w.numpy(), atol=2e-4, rtol=2e-4)


def test_unexpected_parameter_is_an_error(tiny):
  _, state = tiny
  bad = dict(state)
  bad["module.bert.encoder.layer.0.attention.self.extra.weight"] = np.zeros((2, 2))
  with pytest.raises(ValueError, match="extra"):
    chexbert_labeler.convert_state_dict(bad, num_heads=4)


def test_logits_to_labels_order_and_classes():
  n = 2
  logits = [np.zeros((n, 4)) for _ in range(13)] + [np.zeros((n, 2))]
  index = chexbert_labeler.CHEXBERT_CONDITIONS.index
  logits[index("Lung Opacity")][0, 1] = 5.0    # positive
  logits[index("Lung Lesion")][0, 2] = 5.0     # negative
  logits[index("Edema")][1, 3] = 5.0           # uncertain
  logits[index("No Finding")][1, 1] = 5.0      # positive
  labels = chexbert_labeler.logits_to_labels(logits)
  assert labels[0, chexpert.INDEX["Lung Opacity"]] == 1.0
  assert labels[0, chexpert.INDEX["Lung Lesion"]] == 0.0
  assert labels[1, chexpert.INDEX["Edema"]] == -1.0
  assert labels[1, chexpert.NO_FINDING] == 1.0
  assert np.isnan(labels[0, chexpert.INDEX["Cardiomegaly"]])


def test_from_checkpoint_and_label(tiny, tmp_path):
  _, state = tiny
  path = tmp_path / "chexbert.pth"
  torch.save({"model_state_dict": state}, path)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
  labeler = chexbert_labeler.CheXbertLabeler.from_checkpoint(str(path), str(vocab), num_heads=4)
  labels = labeler.label(["FINDINGS: Mild cardiomegaly.", "No pneumothorax."])
  assert labels.shape == (2, 14) and labels.dtype == np.float32
  from clipmed.errors import UserError
  with pytest.raises(UserError, match="does not exist"):
    chexbert_labeler.CheXbertLabeler.from_checkpoint(str(tmp_path / "missing.pth"), str(vocab))


def test_measure_script_compares_chexbert_with_the_rules(tiny, tmp_path, capsys):
  # scripts/measure_report_quality.py --openi ... --chexbert ... on four reports written here,
  # with the tiny random checkpoint: the tables are printed for CheXbert and the agreement.
  import csv
  import os
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts"))
  import measure_report_quality  # pylint: disable=import-outside-toplevel
  _, state = tiny
  torch.save({"model_state_dict": state}, tmp_path / "chexbert.pth")
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
  csv_path = tmp_path / "reports.csv"
  with open(csv_path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["uid", "findings", "impression", "mesh", *chexpert.CATEGORIES])
    for uid, text in enumerate(["Mild cardiomegaly.", "No pneumothorax.",
                                "Small left effusion.", "No effusion."]):
      writer.writerow([uid, text, "", ""] + [""] * chexpert.NUM_CATEGORIES)
  measure_report_quality.main(["--openi", str(csv_path), "--chexbert",
                               str(tmp_path / "chexbert.pth"), "--vocab", str(vocab),
                               "--chexbert_heads", "4"])
  out = capsys.readouterr().out
  assert "CheXbert: F1 of positive-or-uncertain vs MeSH positives" in out
  agreement = out.split("CheXbert labels+")[1]
  for name in chexpert.CATEGORIES:
    assert name in agreement
