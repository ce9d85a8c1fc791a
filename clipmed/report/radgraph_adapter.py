"""Optional adapter: report graphs from the `radgraph` package (RadGraph model) when installed.

The rule extractor (clipmed.report.graph.extract_graph) is the default and needs nothing. Users who
have the `radgraph` package and its model files locally can use the neural extractor instead:

    extractor = RadGraphExtractor()            # imports radgraph; its model must be available
    graphs = extractor(["FINDINGS: ..."])      # list[ReportGraph]

`annotations_to_graph` converts one RadGraph annotation (the package's output for one report:
{"text": ..., "entities": {id: {"tokens", "label", "relations": [[relation, target_id], ...]}}})
and accepts both label styles: "OBS-DP" and "Observation::definitely present".
"""

from collections.abc import Mapping, Sequence
from typing import Any

from clipmed.errors import UserError
from clipmed.report import graph as graph_lib
from clipmed.report import sections

_LONG_LABELS = {
    "anatomy::definitely present": "ANAT-DP",
    "anatomy::measurement::definitely present": "ANAT-DP",
    "observation::definitely present": "OBS-DP",
    "observation::uncertain": "OBS-U",
    "observation::definitely absent": "OBS-DA",
    "observation::measurement::definitely present": "OBS-DP",
}
_SHORT_LABELS = {"ANAT-DP": "ANAT-DP", "OBS-DP": "OBS-DP", "OBS-U": "OBS-U", "OBS-DA": "OBS-DA",
                 "ANAT": "ANAT-DP"}


def _node_type(label: str) -> str | None:
  return _SHORT_LABELS.get(label) or _LONG_LABELS.get(label.lower())


def annotations_to_graph(annotation: Mapping[str, Any]) -> graph_lib.ReportGraph:
  """Converts one RadGraph annotation to a ReportGraph (entities in order of their start token).

  Entities with labels outside the four RadGraph types (e.g. "Anatomy::uncertain" in newer
  models) are kept as the closest type; relations other than located_at / modify / suggestive_of
  are dropped.
  """
  entities = annotation.get("entities", {})
  order = sorted(entities, key=lambda k: (entities[k].get("start_ix", 0), str(k)))
  index, nodes = {}, []
  for key in order:
    entity = entities[key]
    kind = _node_type(str(entity.get("label", "")))
    if kind is None:
      label = str(entity.get("label", "")).lower()
      kind = "ANAT-DP" if label.startswith("anat") else "OBS-U"
    index[key] = len(nodes)
    nodes.append((str(entity.get("tokens", "")), kind))
  edges = []
  for key in order:
    for relation, target in entities[key].get("relations", []):
      relation = str(relation).lower()
      if relation in graph_lib.RELATIONS and str(target) in index:
        edges.append((index[key], index[str(target)], relation))
  return graph_lib.ReportGraph(nodes=nodes, edges=sorted(set(edges)))


class RadGraphExtractor:
  """Runs the `radgraph` package's model on reports (FINDINGS + IMPRESSION when headed)."""

  def __init__(self, **radgraph_kwargs: Any):
    try:
      import radgraph  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise UserError("the optional `radgraph` package is not installed; install it (pip "
                      "install radgraph) with its model, or use clipmed.report.graph."
                      "extract_graph, the built-in rule extractor") from e
    self._model = radgraph.RadGraph(**radgraph_kwargs)

  def __call__(self, texts: Sequence[str]) -> list[graph_lib.ReportGraph]:
    inputs = [" ".join(sections.clinical_text(t).split()) for t in texts]
    output = self._model(inputs)
    return [annotations_to_graph(output[str(i)]) for i in range(len(inputs))]
