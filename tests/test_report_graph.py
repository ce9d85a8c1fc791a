"""Report graphs in the RadGraph schema (clipmed.report.graph, radgraph_adapter)."""

import pytest

from clipmed.report import graph as graph_lib
from clipmed.report import radgraph_adapter


def _edges_by_text(g):
  return {(g.nodes[s][0], g.nodes[d][0], r) for s, d, r in g.edges}


def test_node_types_follow_status():
  g = graph_lib.extract_graph("Mild cardiomegaly. No pneumothorax. Possible left effusion.")
  types = dict(g.nodes)
  assert types["cardiomegaly"] == "OBS-DP"
  assert types["mild"] == "OBS-DP"
  assert types["pneumothorax"] == "OBS-DA"
  assert types["effusion"] == "OBS-U"
  assert types["left"] == "ANAT-DP"


def test_relations():
  g = graph_lib.extract_graph(
      "Small left pleural effusion. Opacity in the right lower lobe, likely atelectasis. "
      "Heart size is normal.")
  edges = _edges_by_text(g)
  assert ("small", "effusion", "modify") in edges
  assert ("left", "pleural", "modify") in edges
  assert ("effusion", "pleural", "located_at") in edges
  assert ("opacity", "lobe", "located_at") in edges
  assert ("lower", "lobe", "modify") in edges
  assert ("opacity", "atelectasis", "suggestive_of") in edges
  assert ("normal", "heart", "located_at") in edges
  assert {r for _, _, r in g.edges} <= set(graph_lib.RELATIONS)
  assert {t for _, t in g.nodes} <= set(graph_lib.NODE_TYPES)


def test_deterministic_and_round_trip():
  text = "FINDINGS: Bibasilar opacities. IMPRESSION: Possible pneumonia."
  a, b = graph_lib.extract_graph(text), graph_lib.extract_graph(text)
  assert a == b
  assert graph_lib.graph_from_dict(graph_lib.graph_to_dict(a)) == a
  assert graph_lib.extract_graph("") == graph_lib.ReportGraph(nodes=[], edges=[])


def test_graph_from_dict_rejects_bad_input():
  with pytest.raises(ValueError, match="node type"):
    graph_lib.graph_from_dict({"nodes": [["x", "OBS"]], "edges": []})
  with pytest.raises(ValueError, match="bad edge"):
    graph_lib.graph_from_dict({"nodes": [["x", "OBS-DP"]], "edges": [[0, 3, "modify"]]})


@pytest.mark.parametrize("labels", [
    ("ANAT-DP", "OBS-DP", "OBS-DA"),
    ("Anatomy::definitely present", "Observation::definitely present",
     "Observation::definitely absent"),
])
def test_radgraph_annotation_conversion(labels):
  annotation = {"text": "left effusion no pneumothorax", "entities": {
      "1": {"tokens": "left", "label": labels[0], "start_ix": 0, "end_ix": 0, "relations": []},
      "2": {"tokens": "effusion", "label": labels[1], "start_ix": 1, "end_ix": 1,
            "relations": [["located_at", "1"], ["unknown_relation", "1"]]},
      "3": {"tokens": "pneumothorax", "label": labels[2], "start_ix": 3, "end_ix": 3,
            "relations": []},
  }}
  g = radgraph_adapter.annotations_to_graph(annotation)
  assert g.nodes == [("left", "ANAT-DP"), ("effusion", "OBS-DP"), ("pneumothorax", "OBS-DA")]
  assert g.edges == [(1, 0, "located_at")]


def test_radgraph_extractor_without_package_is_a_clear_error():
  try:
    import radgraph  # noqa: F401
  except ImportError:
    from clipmed.errors import UserError
    with pytest.raises(UserError, match="radgraph"):
      radgraph_adapter.RadGraphExtractor()
  else:
    pytest.skip("radgraph is installed")
