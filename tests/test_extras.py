"""Tests for input_pipeline.extras (hard-negative and report-graph fields of an example)."""

import json
import pickle

import numpy as np
import pytest
from tests.conftest import make_wordpiece_tokenizer

from clipmed import batch as batch_lib
from clipmed import errors
from clipmed.report import chexpert
from input_pipeline import extras, graphs, transforms

TEXTS = ["Small left pleural effusion.", "No pneumothorax.", "The heart is enlarged.",
         "No pleural effusion."]
BUDGET = batch_lib.GraphBudget(max_nodes=6, max_edges=4, max_node_tokens=3)
CLASSES = chexpert.CATEGORIES
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


def _negative(row, tok, uncertain_as=1.0):
  return extras.negative_fields(row, tok, class_names=CLASSES, uncertain_as=uncertain_as,
                                split="train")


def _graph(row, node_tok, negative):
  return extras.graph_arrays(row, node_tok, BUDGET, negative=negative, study_id="s1",
                             split="train")


def test_negative_fields_tokenise_and_use_u_ones(hf_tokenizer):
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  out = _negative(_row(), tok)
  want_ids, want_mask = tok("No pleural effusion.")
  np.testing.assert_array_equal(out["input_ids"], want_ids)
  np.testing.assert_array_equal(out["attention_mask"], want_mask)
  assert out["input_ids"].dtype == np.int32 and out["labels"].dtype == np.float32
  want = chexpert.clinical_vector(_row()["neg_labels"], uncertain_as=1.0, normalize=False)
  np.testing.assert_array_equal(out["labels"], want)
  assert out["labels"][chexpert.INDEX["Cardiomegaly"]] == 1.0  # uncertain -> 1 (U-ones)
  assert out["labels"][chexpert.INDEX["Pleural Effusion"]] == 0.0
  zeros = _negative(_row(), tok, uncertain_as=0.0)["labels"]
  assert zeros[chexpert.INDEX["Cardiomegaly"]] == 0.0


def test_study_without_negative_gets_an_empty_one(hf_tokenizer):
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  row = _row("none")
  out = _negative(row, tok)
  assert out["attention_mask"].sum() == 2  # [CLS] [SEP]
  assert not out["labels"].any()
  node_tok = extras.NodeTokenizer.from_tokenizer(hf_tokenizer)
  np.testing.assert_array_equal(_graph(row, node_tok, True)["n_node"], [0, BUDGET.max_nodes])
  np.testing.assert_array_equal(_graph(row, node_tok, False)["n_node"],
                                [4, BUDGET.max_nodes - 4])


def test_graph_arrays_match_graphs_module(hf_tokenizer):
  node_tok = extras.NodeTokenizer.from_tokenizer(hf_tokenizer)
  reference = graphs.node_tokenizer(hf_tokenizer)
  for text in TEXTS + ["cardiomediastinal silhouette"]:
    assert node_tok(text) == list(reference(text))
  clone = pickle.loads(pickle.dumps(node_tok))
  assert clone(TEXTS[0]) == node_tok(TEXTS[0])
  sizes = dict(max_nodes=6, max_edges=4, max_node_tokens=3)
  for graph, negative in ((GRAPH, False), (NEG_GRAPH, True)):
    want = graphs.graph_example(graph, reference, **sizes)
    out = _graph(_row(), node_tok, negative)
    assert set(out) == set(want) == set(batch_lib.GRAPH_FIELDS)
    for key in want:
      np.testing.assert_array_equal(out[key], want[key], err_msg=key)


def test_real_fields_stack_into_the_batch_spec(hf_tokenizer):
  node_tok = extras.NodeTokenizer.from_tokenizer(hf_tokenizer)
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  negative = dict(_negative(_row(), tok), graph=_graph(_row(), node_tok, True))
  example = dict(image=np.zeros((16, 16, 1), np.float32), input_ids=negative["input_ids"],
                 attention_mask=negative["attention_mask"], labels=negative["labels"],
                 graph=_graph(_row(), node_tok, False), negative=negative)
  batch = graphs.stack_examples([example] * 3)
  spec = batch_lib.BatchSpec(image_size=16, channels=1, max_text_length=8, num_classes=14,
                             negatives=True, graph=BUDGET)
  spec.check(batch)
  zeros = spec.zeros(3)
  spec.check(zeros)
  np.testing.assert_array_equal(zeros["negative"]["graph"]["n_node"], [[0, 6]] * 3)
  assert zeros["attention_mask"].all()  # attention over an all-padding row would be undefined
  with pytest.raises(ValueError, match=r"batch\['negative'\] has fields"):
    spec.check(dict(batch, negative={k: v for k, v in negative.items() if k != "graph"}))


def test_graph_budget_and_data_errors(hf_tokenizer):
  with pytest.raises(ValueError, match="max_nodes >= 2"):
    batch_lib.GraphBudget(max_nodes=1, max_edges=4, max_node_tokens=3)
  row = _row()
  del row["neg_report"]
  tok = transforms.TextTokenizer(hf_tokenizer, 8)
  with pytest.raises(errors.DataError, match="'neg_report'.*input_pipeline.prepare"):
    _negative(row, tok)
  row = _row()
  row["graph"] = b"{not json"
  with pytest.raises(errors.DataError, match="study 's1' in split 'train'.*'graph'"):
    _graph(row, extras.NodeTokenizer.from_tokenizer(hf_tokenizer), False)
