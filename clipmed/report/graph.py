"""Report graphs in the RadGraph schema, extracted by rules (deterministic, offline).

Nodes are words of the report typed as in RadGraph (Jain et al., 2021): anatomy ("ANAT-DP") or
observation, the latter definitely present ("OBS-DP"), uncertain ("OBS-U") or definitely absent
("OBS-DA"). Edges are (src, dst, relation) with relations:
  located_at     observation -> anatomy     "effusion" -> "pleural"; "opacity" -> "lobe"
  modify         modifier -> head            "mild" -> "cardiomegaly"; "left" -> "lobe"
  suggestive_of  observation -> observation  "opacity" -> "atelectasis" ("opacity, likely
                                             atelectasis")
An observation's status comes from the labeler's negation and uncertainty cues.
"""

import dataclasses
import re

from clipmed.report import negation
from clipmed.report import sections
from clipmed.report import sentences as sentences_lib

NODE_TYPES = ("ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA")
RELATIONS = ("located_at", "modify", "suggestive_of")
_STATUS_TYPE = {negation.POSITIVE: "OBS-DP", negation.UNCERTAIN: "OBS-U",
                negation.NEGATIVE: "OBS-DA"}


@dataclasses.dataclass(frozen=True)
class ReportGraph:
  """A report graph.

  Attributes:
    nodes: (text, type) per node; type in NODE_TYPES.
    edges: (src, dst, relation) with node indices; relation in RELATIONS.
  """
  nodes: list[tuple[str, str]]
  edges: list[tuple[int, int, str]]


def _words(text: str) -> frozenset[str]:
  return frozenset(text.split())


_ANATOMY = _words("""
lung lungs lobe lobes base bases basilar bibasilar basal apex apices apical biapical hilum hila
hilar perihilar suprahilar infrahilar heart cardiac mediastinum mediastinal cardiomediastinal
silhouette silhouettes contour contours pleura pleural costophrenic angle angles recess recesses
hemidiaphragm hemidiaphragms diaphragm diaphragms chest thorax hemithorax thoracic rib ribs clavicle
clavicles spine vertebra vertebrae vertebral aorta aortic trachea svc atrium ventricle lingula
lingular retrocardiac parenchyma parenchymal vasculature vascularity vessels midlung zone zones
fissure bronchovascular airspace airspaces osseous bony bone bones humerus humeral shoulder
shoulders scapula sternum sternal abdomen quadrant junction cavoatrial stomach lobar segment
segments subsegment thoracolumbar cervical lumbar interstitium arch knob mediastinum soft tissue
tissues hemithoraces airways airway bronchi bronchial esophagus jugular subclavian
""")
_ANATOMY_MODIFIERS = _words("""
left right bilateral upper middle mid lower lateral medial posterior anterior superior inferior
both central peripheral distal proximal
""")
_OBSERVATIONS = _words("""
opacity opacities opacification infiltrate infiltrates effusion effusions pneumothorax
pneumothoraces atelectasis atelectatic consolidation consolidations edema cardiomegaly enlarged
enlargement normal clear unremarkable granuloma granulomas nodule nodules mass masses fracture
fractures scarring scar scars hernia degenerative tortuous tortuosity calcified calcification
calcifications catheter catheters tube tubes line lines pacemaker hyperinflated hyperinflation
hyperexpanded hyperexpansion emphysema emphysematous deformity deformities elevation elevated
prominence prominent thickening disease process abnormality abnormalities congestion widening
widened collapse lucency density densities markings blunting clips wires wire stent stents sutures
leads device devices hardware pneumonia infection lesion lesions intact crowding osteophytes
spondylosis scoliosis kyphosis fibrosis atherosclerosis atherosclerotic ectatic expanded inflated
hypoinflation volumes changes sternotomy picc port drain aicd defibrillator valve granulomatous
cavitation cavity fluid air findings finding injury metastases metastatic tumor malignancy
""")
_OBSERVATION_MODIFIERS = _words("""
mild mildly moderate moderately severe severely small large minimal trace tiny patchy streaky focal
diffuse acute chronic subsegmental linear platelike plate-like multifocal scattered round nodular
interstitial reticular hazy dense faint subtle significant marked minimally slight slightly
increased decreased low high old healed healing displaced nondisplaced loculated layering
moderate-sized small-to-moderate large-sized bandlike
""")
# Words that describe where and how much (anatomy and modifiers), not what was found.
DESCRIPTIVE_WORDS = _ANATOMY | _ANATOMY_MODIFIERS | _OBSERVATION_MODIFIERS
_SUGGESTIVE_RE = re.compile(
    r"\b(?:suggestive\s+of|suggesting|suggests?|to\s+suggest|consistent\s+with|compatible\s+with|"
    r"(?:may|might|could|likely|probably)\s+(?:represent|reflect|be\s+due\s+to|indicate)|"
    r"represent(?:s|ing)?|reflect(?:s|ing)?|likely|concerning\s+for|suspicious\s+for|worrisome\s+"
    r"for|due\s+to|secondary\s+to|indicat(?:es|ing|ive\s+of)|related\s+to|versus|vs)\b")
_CLAUSE_BREAK_RE = re.compile(r"[;:]|\b(?:but|however|although|which|whereas|there\s+(?:is|are))\b")
_TOKEN_RE = re.compile(r"[a-z][a-z-]*")


def _kind(word: str) -> str | None:
  if word in _ANATOMY:
    return "anat"
  if word in _ANATOMY_MODIFIERS:
    return "anat_mod"
  if word in _OBSERVATIONS:
    return "obs"
  if word in _OBSERVATION_MODIFIERS:
    return "obs_mod"
  return None


def _sentence_graph(sentence: str, nodes: list[tuple[str, str]],
                    edges: list[tuple[int, int, str]]) -> None:
  """Adds one sentence's nodes and edges (in place)."""
  text = sentence.lower()
  tokens = [(m.group(0), m.start(), m.end(), _kind(m.group(0))) for m in _TOKEN_RE.finditer(text)]
  breaks = [m.start() for m in _CLAUSE_BREAK_RE.finditer(text)]
  clause_of = lambda pos: sum(1 for b in breaks if b <= pos)  # noqa: E731
  entities = []  # (token index, node index, kind, clause)
  for i, (word, start, end, kind) in enumerate(tokens):
    if kind is None:
      continue
    if kind in ("anat", "anat_mod"):
      node_type = "ANAT-DP"
    else:
      node_type = _STATUS_TYPE[negation.mention_status(text, start, end)]
    nodes.append((word, node_type))
    entities.append((i, len(nodes) - 1, kind, clause_of(start)))
  heads = {"obs": [e for e in entities if e[2] == "obs"],
           "anat": [e for e in entities if e[2] == "anat"]}
  for tok, node, kind, clause in entities:
    if kind in ("obs_mod", "anat_mod"):
      # A modifier modifies the next head of its kind within three words.
      target = "obs" if kind == "obs_mod" else "anat"
      nxt = [h for h in heads[target] if tok < h[0] <= tok + 3 and h[3] == clause]
      if nxt:
        edges.append((node, nxt[0][1], "modify"))
        if kind == "obs_mod":
          nodes[node] = (nodes[node][0], nodes[nxt[0][1]][1])  # a modifier shares its head's status
    elif kind == "obs":
      # Located at the nearest anatomy of the clause: just before it, else just after it.
      before = [h for h in heads["anat"] if tok - 4 <= h[0] < tok and h[3] == clause]
      after = [h for h in heads["anat"] if tok < h[0] <= tok + 6 and h[3] == clause]
      if before:
        edges.append((node, before[-1][1], "located_at"))
      elif after:
        edges.append((node, after[0][1], "located_at"))
  # suggestive_of: observation before a cue -> first observation after it, same clause.
  obs = heads["obs"]
  for m in _SUGGESTIVE_RE.finditer(text):
    left = [h for h in obs if tokens[h[0]][2] <= m.start()]
    right = [h for h in obs if tokens[h[0]][1] >= m.end()]
    if left and right and left[-1][3] == right[0][3] == clause_of(m.start()):
      edges.append((left[-1][1], right[0][1], "suggestive_of"))


def extract_graph(text: str, *, sections_only: bool = True) -> ReportGraph:
  """Extracts the report graph of a report.

  Args:
    text: report text.
    sections_only: read FINDINGS + IMPRESSION when the report has headers.

  Returns:
    A ReportGraph; nodes in reading order, edges sorted and without repeats.
  """
  if sections_only:
    text = sections.clinical_text(text)
  nodes: list[tuple[str, str]] = []
  edges: list[tuple[int, int, str]] = []
  for sentence in sentences_lib.split_sentences(text):
    _sentence_graph(sentence, nodes, edges)
  return ReportGraph(nodes=nodes, edges=sorted(set(edges)))


def graph_to_dict(graph: ReportGraph) -> dict:
  """JSON-friendly form: {"nodes": [[text, type], ...], "edges": [[src, dst, relation], ...]}."""
  return {"nodes": [list(n) for n in graph.nodes], "edges": [list(e) for e in graph.edges]}


def graph_from_dict(data: dict) -> ReportGraph:
  """Inverse of graph_to_dict, with validation of types and indices."""
  nodes = [(str(t), str(k)) for t, k in data["nodes"]]
  edges = [(int(s), int(d), str(r)) for s, d, r in data["edges"]]
  for _, kind in nodes:
    if kind not in NODE_TYPES:
      raise ValueError(f"unknown node type {kind!r}; expected one of {NODE_TYPES}")
  for s, d, r in edges:
    if r not in RELATIONS or not (0 <= s < len(nodes) and 0 <= d < len(nodes)):
      raise ValueError(f"bad edge {(s, d, r)} for a graph of {len(nodes)} nodes")
  return ReportGraph(nodes=nodes, edges=edges)
