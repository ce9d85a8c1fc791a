"""Tests for input_pipeline.extras (hard-negative and report-graph fields of an example)."""

import json
import pickle

import ml_collections
import numpy as np
import pytest
from tests.conftest import make_wordpiece_tokenizer

from clipmed.report import chexpert
from input_pipeline import extras, graphs, transforms

TEXTS = ["Small left pleural effusion.", "No pneumothorax.", "The heart is enlarged.",
         "No pleural effusion."]
BUDGET = extras.GraphBudget(max_nodes=6, max_edges=4, max_node_tokens=3)
GRAPH = {"nodes": [["left", "ANAT-DP"], ["pleural", "ANAT-DP"], ["effusion", "OBS-DP"],
                   ["small", "OBS-DP"]],
         "edges": [[2, 1, "located_at"], [3, 2, "modify"], [0, 1, "modify"]]}
NEG_GRAPH = {"nodes": [["pleural", "ANAT-DP"], ["effusion", "OBS-DA"]],
             "edges": [[1, 0, "located_at"]]}


@pytest.fixture(scope="module")
def hf_tokenizer():
  return make_wordpiece_tokenizer(TEXTS)


def _row(source="negated"):
  labels = np.full(14, np.nan, np.float32)
  labels[chexpert.INDEX["Pleural Effusion"]] = 1.0
  labels[chexpert.INDEX["Cardiomegaly"]] = -1.0
  neg = labels.copy()
  neg[chexpert.INDEX["Pleural Effusion"]] = 0.0
  return {"study_id": b"s1", "report": b"FINDINGS: Small left pleural effusion.",
          "report_clean": b"Small left pleural effusion.", "labels": labels,
          "graph": json.dumps(GRAPH).encode(), "neg_report": b"No pleural effusion.",
          "neg_labels": neg, "neg_graph": json.dumps(NEG_GRAPH).encode(),
          "neg_entity": b"Pleural Effusion", "neg_source": source.encode()}


def test_negative_fields_tokenise_and_use_u_ones(hf_tokenizer):
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  out = extras.negative_fields(_row(), tok, uncertain_as=1.0, split="train")
  want_ids, want_mask = tok("No pleural effusion.")
  np.testing.assert_array_equal(out["neg_input_ids"], want_ids)
  np.testing.assert_array_equal(out["neg_attention_mask"], want_mask)
  assert out["neg_input_ids"].dtype == np.int32 and out["neg_labels"].dtype == np.float32
  want = chexpert.clinical_vector(_row()["neg_labels"], uncertain_as=1.0, normalize=False)
  np.testing.assert_array_equal(out["neg_labels"], want)
  assert out["neg_labels"][chexpert.INDEX["Cardiomegaly"]] == 1.0  # uncertain -> 1 (U-ones)
  assert out["neg_labels"][chexpert.INDEX["Pleural Effusion"]] == 0.0
  zeros = extras.negative_fields(_row(), tok, uncertain_as=0.0, split="train")["neg_labels"]
  assert zeros[chexpert.INDEX["Cardiomegaly"]] == 0.0


def test_study_without_negative_gets_an_empty_one(hf_tokenizer):
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  row = _row("none")
  out = extras.negative_fields(row, tok, uncertain_as=1.0, split="train")
  assert out["neg_attention_mask"].sum() == 2  # [CLS] [SEP]
  assert not out["neg_labels"].any()
  g = extras.graph_fields(row, extras.NodeTokenizer.from_tokenizer(hf_tokenizer), BUDGET,
                          with_negatives=True, study_id="s1", split="train")
  np.testing.assert_array_equal(g["neg_graph_n_node"], [0, BUDGET.max_nodes])
  np.testing.assert_array_equal(g["graph_n_node"], [4, BUDGET.max_nodes - 4])


def test_graph_fields_match_graphs_module(hf_tokenizer):
  node_tok = extras.NodeTokenizer.from_tokenizer(hf_tokenizer)
  reference = graphs.node_tokenizer(hf_tokenizer)
  for text in TEXTS + ["cardiomediastinal silhouette"]:
    assert node_tok(text) == list(reference(text))
  clone = pickle.loads(pickle.dumps(node_tok))
  assert clone(TEXTS[0]) == node_tok(TEXTS[0])
  out = extras.graph_fields(_row(), node_tok, BUDGET, with_negatives=True, study_id="s1",
                            split="train")
  sizes = dict(max_nodes=6, max_edges=4, max_node_tokens=3)
  want = graphs.graph_example(GRAPH, reference, prefix="graph_", **sizes)
  want.update(graphs.graph_example(NEG_GRAPH, reference, prefix="neg_graph_", **sizes))
  assert set(out) == set(want)
  for key in want:
    np.testing.assert_array_equal(out[key], want[key], err_msg=key)
  only = extras.graph_fields(_row(), node_tok, BUDGET, with_negatives=False, study_id="s1",
                             split="train")
  assert set(only) == {k for k in want if k.startswith("graph_")}


def test_dummy_fields_have_batch_shapes(hf_tokenizer):
  node_tok = extras.NodeTokenizer.from_tokenizer(hf_tokenizer)
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  real = {**extras.negative_fields(_row(), tok, uncertain_as=1.0, split="train"),
          **extras.graph_fields(_row(), node_tok, BUDGET, with_negatives=True, study_id="s1",
                                split="train")}
  batch = graphs.stack_examples([real, real, real])
  dummy = extras.dummy_fields(batch_size=3, max_text_length=8, with_negatives=True,
                              graphs=BUDGET)
  assert set(dummy) == set(batch)
  for key, value in batch.items():
    assert dummy[key].shape == value.shape and dummy[key].dtype == value.dtype, key
  assert set(extras.dummy_fields(batch_size=3, max_text_length=8, with_negatives=False,
                                 graphs=None)) == set()


def test_graph_budget_from_config_and_errors(hf_tokenizer):
  cfg = ml_collections.ConfigDict(dict(enabled=True, hidden_size=8, num_layers=2, max_nodes=6,
                                       max_edges=4, max_node_tokens=3))
  assert extras.GraphBudget.from_config(cfg) == BUDGET
  assert extras.GraphBudget.from_config(None) is None
  with pytest.raises(KeyError, match="max_node_tokens"):
    extras.GraphBudget.from_config(dict(max_nodes=6, max_edges=4))
  with pytest.raises(ValueError, match="max_nodes >= 2"):
    extras.GraphBudget.from_config(dict(max_nodes=1, max_edges=4, max_node_tokens=3))
  row = _row()
  del row["neg_report"]
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  with pytest.raises(KeyError, match="'neg_report'.*SynthCXR >= 1.2.0"):
    extras.negative_fields(row, tok, uncertain_as=1.0, split="train")
  row = _row()
  row["graph"] = b"{not json"
  with pytest.raises(ValueError, match="study 's1' in split 'train'.*'graph'"):
    extras.graph_fields(row, extras.NodeTokenizer.from_tokenizer(hf_tokenizer), BUDGET,
                        with_negatives=False, study_id="s1", split="train")
