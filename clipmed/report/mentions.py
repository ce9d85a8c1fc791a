"""Mention lexicon of the rule labeler: how each CheXpert category is named in chest X-ray reports.

Every rule is a :class:`MentionRule`: a regular expression over lower-cased sentence text, the
category it names, and optionally a fixed status (statements of normality such as "heart size is
normal" are negative mentions of Cardiomegaly whatever cue surrounds them) and context that rules a
match out ("calcified nodule" is a granuloma, not a lung lesion; "pericardial effusion" is not a
pleural effusion). Status detection for the other mentions (negation / uncertainty cues and their
scopes) is in :mod:`clipmed.report.negation`.

The rules were written for this project from the CheXpert category definitions and radiology usage.
"""

import dataclasses
import re

from clipmed.report import chexpert

# Gaps between an organ and its adjective: a few words, no clause break, and none of the listed
# words (a positive rule must not reach across "normal", a negative one across "enlarged").
_ORGAN_HEART = (r"(?:heart(?:\s+size)?|cardiac\s+(?:silhouette|shadow|size|contours?|diameter)|"
                r"cardiac|size\s+of\s+the\s+heart|cardiac\s+and\s+mediastinal\s+silhouettes?)")
_ORGAN_MEDIASTINUM = (r"(?:cardio[\s-]?mediastinal\s+(?:silhouette|contours?|size|shadow)|"
                      r"(?:superior\s+)?mediastin(?:um|al\s+(?:silhouette|contours?|width|size|"
                      r"shadow)))")
_ORGAN_VESSELS = (r"(?:pulmonary\s+(?:vascularity|vasculature|vessels|vascular\s+markings)|"
                  r"vascularity|vasculature)")
_ENLARGED = r"(?:enlarged|enlargement|large|increased|prominent|borderline|widened|widening|wide)"
_NORMAL = (r"(?:normal|within\s+(?:the\s+)?normal\s+(?:limits|range)|"
           r"within\s+(?:the\s+)?limits\s+of\s+normal|unremarkable|"
           r"upper\s+limits?\s+(?:of\s+)?normal|top\s+(?:of\s+)?normal|"
           r"not\s+(?:significantly\s+)?(?:enlarged|widened))")


def _gap(max_words: int, forbidden: str) -> str:
  """A short run of words (commas allowed) without any forbidden word."""
  return (r"(?:[\s,]+(?!(?:" + forbidden + r")\b)[a-z0-9/-]+){0," + str(max_words)
          + r"}?[\s,]+")


# A cause ("secondary to", "due to") starts another noun phrase: "mediastinum, secondary to a
# large hernia" does not call the mediastinum large.
_POS_GAP = _gap(5, r"normal|unremarkable|limits|but|however|although|which|while|whereas|"
                r"without|no|due|secondary|related|because|from|by")
_NEG_GAP = _gap(7, r"enlarged|enlargement|increased|prominent|widened|but|however|although|"
                r"which|while|whereas|borderline")
# "normal or mildly enlarged", "enlarged or at the upper limits of normal": an organ's size offered
# as alternatives is uncertain (a hedge rule: it overrides the mentions it contains).
_NORMAL_OR_ENLARGED = (
    r"(?:" + _NEG_GAP + _NORMAL + r"\s*,?\s+or\s+(?:\w+\s+)?" + _ENLARGED + r"|" + _POS_GAP
    + _ENLARGED + r"\s*,?\s+or\s+(?:\w+\s+){0,2}?(?:at\s+)?(?:the\s+)?" + _NORMAL + r")\b")


@dataclasses.dataclass(frozen=True)
class MentionRule:
  """One way of naming a category.

  Attributes:
    category: CheXpert category index.
    pattern: compiled regex over lower-cased text.
    status: fixed status (0.0 for statements of normality, -1.0 for hedges that offer normal and
      abnormal as alternatives, which override the category's mentions inside them) or None to
      read the cues.
    exclude_before: regex searched in the `before_chars` characters before the match; a hit
      rules it out.
    exclude_after: regex searched in the `after_chars` characters after the match; a hit rules
      it out.
    after_chars: how far exclude_after looks (40 characters unless a rule needs its clause).
    before_chars: how far exclude_before looks (40 characters unless a rule needs its clause).
    hedge_after: regex searched in the 120 characters after the match; a hit makes a positive
      mention uncertain (an enlargement put down to technique is only apparent).
  """
  category: int
  pattern: re.Pattern
  status: float | None = None
  exclude_before: re.Pattern | None = None
  exclude_after: re.Pattern | None = None
  after_chars: int = 40
  before_chars: int = 40
  hedge_after: re.Pattern | None = None


def _rule(category: str, pattern: str, status: float | None = None, before: str | None = None,
          after: str | None = None, after_chars: int = 40, before_chars: int = 40,
          hedge_after: str | None = None) -> MentionRule:
  return MentionRule(chexpert.INDEX[category], re.compile(pattern),
                     status, re.compile(before) if before else None,
                     re.compile(after) if after else None, after_chars, before_chars,
                     re.compile(hedge_after) if hedge_after else None)


_NEG = chexpert.NEGATIVE
_UNC = chexpert.UNCERTAIN
_DEVICE_BEFORE_EXCLUDE = r"(?:breast|nipple|dental|teeth|tooth)\W+(?:\w+\W+)?$"
# A nodule that its own clause names a calcified granuloma ("nodule in the left base, likely a
# calcified granuloma") is a calcified nodule, which CheXpert's unmention list ("calcified nodul")
# keeps out of Lung Lesion. The naming word may be an identity verb or hedge, an appositive comma,
# or a de-identified word (XXXX) standing for one.
_NAMED_CALCIFIED_GRANULOMA = (
    r"^[^;.]*?(?:\b(?:represent\w*|reflect\w*|likely|probabl[ey]|consistent\s+with|"
    r"compatible\s+with|suggestive\s+of|in\s+keeping\s+with|typical\s+of|is|are|xxxx)|,)\s+"
    r"(?:(?:an?|old|small|tiny|healed|benign|\w+ly)\s+)*calcified\s+(?:\w+\s+)?granulom")
# The same when the clause (or the next sentence, pointing back) says the nodule itself is
# calcified ("the nodule at the left base appears densely calcified", "nodule with central
# calcification", but not "nodules with calcification of the aorta"); "is not calcified" names a
# non-calcified nodule, which stays a lesion.
_STATED_CALCIFIED = (
    r"^[^;.]*?\b(?:(?:is|are|appears?|appearing|seems?|being|likely|probably|which\s+is|"
    r"that\s+is|which\s+are|that\s+are|xxxx)\s+(?:(?:also|again|now|\w+ly)\s+){0,2}calcified|"
    r"with\s+(?:(?:central|dense|diffuse|popcorn|laminated|internal|\w+ly)\s+)?"
    r"calcifications?\b(?!\s+(?:of|in|within|along|involving)\b))")
# A calcified nodule written with the adjective in front ("calcified 6 mm nodule", "densely
# calcified left apical nodule"): up to three words in between, none joining a second finding
# ("calcified lymph nodes and a nodule" keeps the nodule); "non-calcified" is a lesion.
_CALCIFIED_BEFORE = (r"(?<!non-)(?<!non\s)\bcalcif(?:ied|ic)\s+(?:(?!(?:and|or|with|but|no|nor|"
                     r"versus|vs|granulom\w*|nodes?)\b)[\w.-]+\s+){0,3}$")
# A nodule the clause explains as something outside the lung ("nodule at the right base, likely a
# nipple shadow", "nodule probably due to overlapping osseous structures") is not a lesion, unless
# another reading is offered ("nipple shadow or a true nodule"); CheXpert has no such list, but
# what the report names is not a lung lesion either.
_NAMED_NON_LESION = (
    r"^[^;.]*?\b(?:represent\w*|reflect\w*|likely|probabl[ey]|possibl[ey]|consistent\s+with|"
    r"compatible\s+with|suggestive\s+of|in\s+keeping\s+with|typical\s+of|due\s+to|secondary\s+to|"
    r"related\s+to|is|are|xxxx)\s+(?:(?:an?|the|right|left|bilateral|prominent|"
    r"\w+ly)\s+)*(?:nipple|(?:overlapping|overlying|superimpos\w+)\s+(?:\w+\s+){0,2}?"
    r"(?:structures|shadows|vessels|bones|ribs)|bone\s+island|(?:summation|confluence)\s+of|"
    r"vascular\s+(?:shadows?|structures?)|(?:healing|healed|old)\s+(?:\w+\s+)?fractures?|"
    r"costochondral|end[\s-]on\s+vessel|vessels?\s+(?:seen\s+)?end[\s-]on)"
    r"(?![^;.]*\b(?:or|versus|vs)\b)")
# A mass or nodule placed in another organ ("mass in the left breast", "nodule of the thyroid").
_IN_OTHER_ORGAN = (r"^\s+(?:(?:is\s+)?(?:seen\s+|noted\s+)?(?:in|of|within|involving|along|at)\s+"
                   r"(?:the\s+)?(?:(?:right|left)\s+)?(?:breasts?|thyroid|neck|axilla\w*|liver|"
                   r"abdomen|kidneys?|chest\s+wall|soft\s+tissues?|skin|spleen|adrenals?)\b)")
# Tumours of other organs: a bone or liver metastasis, a breast carcinoma, is not a lung lesion.
_OTHER_ORGAN = (r"(?:bones?|bony|osseous|skeletal|skeleton|hepatic|liver|brain|adrenals?|spin\w*|"
                r"vertebra\w*|ribs?|breasts?|prostate|renal|kidneys?|colon|colorectal|thyroid|"
                r"ovarian|bladder|pancrea\w*|gastric|esophageal|skin|lytic|blastic|sclerotic|"
                r"osteolytic|osteoblastic)")
# A heart or mediastinum that looks large because of how the film was taken ("mediastinal
# widening, likely due to AP technique", "cardiomegaly accentuated by low lung volumes") is only
# apparently enlarged: uncertain, whatever cue the words before carry. A second finding in
# between ("cardiomegaly and atelectasis due to low volumes") takes the cause.
_APPARENT_SIZE = (
    r"^(?:(?!\b(?:and|with|but|however)\b)[^;.])*?\b(?:(?:due|secondary|related|attributable|"
    r"accentuated|exaggerated|magnified|partly|partially)\s+(?:in\s+part\s+)?(?:to|by)|from)\s+"
    r"(?:the\s+|an?\s+)?(?:\w+\s+){0,3}?(?:technique|projection|ap|portable|rotation|rotated|"
    r"positioning|position|supine|lordotic|magnification|low\s+(?:lung\s+)?volumes?|"
    r"(?:poor|shallow|suboptimal|low|limited)\s+inspirat\w*|hypoinflation|habitus)\b")
# Places outside the lungs where a density may lie ("density possibly within the piriform sinus").
_EXTRAPULMONARY_PLACE = (r"^[^;.]*?\b(?:in|within)\s+(?:one\s+of\s+|the\s+region\s+of\s+)?"
                         r"(?:the\s+)?(?:\w+\s+)?"
                         r"(?:pi?y?riform\s+sinus\w*|trachea|esophag\w+|stomach|abdomen|neck|"
                         r"axilla\w*)\b")

RULES: tuple[MentionRule, ...] = (
    # Enlarged Cardiomediastinum.
    _rule("Enlarged Cardiomediastinum",
          r"\benlarged\s+cardiomediastinum\b|\b(?:widened|widening\s+of\s+the|enlarged|wide)\s+"
          r"(?:superior\s+)?mediastin\w*|\bmediastinal\s+(?:widening|enlargement)\b",
          hedge_after=_APPARENT_SIZE),
    _rule("Enlarged Cardiomediastinum", _ORGAN_MEDIASTINUM + _POS_GAP + _ENLARGED + r"\b",
          hedge_after=_APPARENT_SIZE),
    _rule("Enlarged Cardiomediastinum", _ORGAN_MEDIASTINUM + _NEG_GAP + _NORMAL + r"\b", _NEG),
    _rule("Enlarged Cardiomediastinum",
          r"\bnormal\s+(?:size\s+(?:and\s+)?)?(?:cardio[\s-]?mediastinal|mediastinal)\s+"
          r"(?:silhouette|contours?|size|width)", _NEG),
    _rule("Enlarged Cardiomediastinum", _ORGAN_MEDIASTINUM + _NORMAL_OR_ENLARGED, _UNC),
    # Cardiomegaly.
    _rule("Cardiomegaly", r"\bcardiomegaly\b|\bcardiac\s+enlargement\b|\bmegacardia\b",
          hedge_after=_APPARENT_SIZE),
    _rule("Cardiomegaly",
          r"\b(?:enlarge(?:d|ment\s+of\s+the)|increased|large)\s+(?:size\s+of\s+the\s+)?"
          r"(?:heart|cardiac\s+(?:silhouette|shadow|size|contours?))\b",
          hedge_after=_APPARENT_SIZE),
    _rule("Cardiomegaly", r"\b" + _ORGAN_HEART + _POS_GAP
          + r"(?:enlarged|enlargement|large|increased|borderline)\b",
          hedge_after=_APPARENT_SIZE),
    _rule("Cardiomegaly", r"\bborderline\s+(?:heart|cardiac)\s+size\b"),
    _rule("Cardiomegaly", r"\b" + _ORGAN_HEART + _NEG_GAP + _NORMAL + r"\b", _NEG),
    _rule("Cardiomegaly",
          r"\b(?:normal|top\s+normal)(?:[\s-]+sized?)?\s+(?:size\s+(?:of\s+the\s+)?)?"
          r"(?:heart|cardiac)\b", _NEG),
    _rule("Cardiomegaly", r"\b" + _ORGAN_HEART + _NORMAL_OR_ENLARGED, _UNC),
    # Lung Lesion: CheXpert's mentions (nodule, mass, lump, cavitary lesion, carcinoma, neoplasm,
    # tumor) and their synonyms (tumour, malignancy, metastasis, lung / pulmonary lesion).
    # Decisions, from the reference's definition (Nodule, Mass -> Lung Lesion; opacity / density
    # -> Lung Opacity; a calcified granuloma is not a lesion):
    #   * a calcified nodule is not a lesion (CheXpert's unmention "calcified nodul"), wherever the
    #     clause puts "calcified" ("calcified 6 mm nodule", "the nodule appears calcified");
    #     "non-calcified nodule" is one;
    #   * a granuloma is not a lesion, calcified or not (not in CheXpert's list; a nodule said to be
    #     a granuloma still is);
    #   * "nodular density / opacity / opacification" is a Lung Opacity only: CheXpert's list
    #     names them, but they describe the shape of an opacity, which the reference codes as a
    #     round opacity or density, not as a nodule (a departure from CheXpert's list);
    #   * a nodule the clause explains away (nipple shadow, overlapping structures, bone island,
    #     vessel end-on, healing fracture), and a mass, nodule or tumour of another organ (breast,
    #     thyroid, bone metastases), is not a lung lesion.
    _rule("Lung Lesion",
          r"\bnodul(?:e|es)\b|\bnodular\s+(?:\w+\s+)?(?:lesions?|masse?s?)\b|"
          r"\bmicronodul(?:e|es|ar)\b",
          before=_CALCIFIED_BEFORE + r"|(?:thyroid|breast|skin|cutaneous|subcutaneous)\s+$",
          after=_NAMED_CALCIFIED_GRANULOMA + "|" + _STATED_CALCIFIED + "|" + _NAMED_NON_LESION
                + "|" + _IN_OTHER_ORGAN, after_chars=120),
    _rule("Lung Lesion", r"\bmass(?:es)?\b|\blumps?\b",
          before=r"(?:soft\s+tissue|body|bone|muscle|breast|neck|abdominal|thyroid)\W+$",
          after=r"^\s+effect|" + _IN_OTHER_ORGAN),
    _rule("Lung Lesion",
          r"\b(?:lung|pulmonary|parenchymal|cavitary|cavitating|spiculated|apical|hilar)\s+"
          r"lesions?\b|\bcavit(?:ary|ating)\s+(?:\w+\s+)?(?:nodul\w+|mass\w*)",
          before=r"(?:thoracic|pleural|abdominal|peritoneal|chest|oral|nasal|body|medullary|"
                 r"marrow|joint|glenoid)\W+$"),
    _rule("Lung Lesion", r"\b(?:neoplasms?|neoplastic|tumou?rs?|malignan(?:cy|cies|t)|"
          r"carcinomas?|metasta(?:sis|ses|tic))\b",
          before=r"\b" + _OTHER_ORGAN + r"\s+(?:[\w-]+\s+){0,2}$|\b(?:lytic|blastic|sclerotic|"
                 r"bone|bony|osseous|rib|vertebral|spinal)\s+(?:\w+\s+){0,3}?lesions?\b"
                 r"(?:(?!\band\b)[^;.])*$", before_chars=80,
          after=r"^\s+(?:\w+\s+)?(?:(?:to|in|of|within|involving)\s+(?:the\s+)?(?:\w+\s+)?)?"
                + _OTHER_ORGAN + r"\b"),
    # Lung Opacity.
    _rule("Lung Opacity", r"\bopaci(?:ty|ties|fication|fications|fied)\b",
          before=r"calci(?:fied|fic)\W+(?:\w+\W+)?$"),
    _rule("Lung Opacity", r"\binfiltrat(?:e|es|ion|ions|ive)\b"),
    _rule("Lung Opacity", r"\bair[\s-]?space\s+(?:disease|process|opacit\w+|filling|shadowing)"),
    _rule("Lung Opacity", r"\bdensit(?:y|ies)\b",
          before=r"(?:bone|bony|osseous|tubular|metallic|soft\s+tissue|mineral|radio-?o?paque|"
                 r"breast)\W+(?:\w+\W+)?$|\bbone\s+densit",
          after=r"^\W+(?:\w+\W+){0,3}?(?:over(?:lying)?|projecting|projected|in\s+the\s+region)\s+"
                r"(?:of\s+)?(?:the\s+)?(?:\w+\s+){0,4}?(?:heart|mediastinum|ribs?|spine|clavicles?|"
                r"scapula|soft\s+tissues?|breasts?|vertebra\w*)\b|"
                + _EXTRAPULMONARY_PLACE, after_chars=120),
    # Pleural scarring is not a lung opacity (CheXpert's unmention "pleural scar"), also when the
    # clause says what a pleural finding is ("pleural thickening at the apex is likely scarring").
    _rule("Lung Opacity", r"\bscar(?:s|ring|red)?\b",
          before=r"pleura\w*\W+(?:\w+\W+){0,2}$|\bpleura\w*\s+(?:thickening|reaction|changes?|"
                 r"densit\w+|opacit\w+)\b(?:(?!\b(?:and|there|with|while|but)\b)[^;.])*?\b"
                 r"(?:is|are|likely|probably|represents?|representing|reflects?|consistent\s+with|"
                 r"compatible\s+with|suggestive\s+of|xxxx)\s+(?:\w+\s+)?$",
          before_chars=100,
          after=r"^\s+(?:of|in|along|involving)\s+(?:the\s+)?(?:\w+\s+)?pleura"),
    _rule("Lung Opacity", r"\bfibro(?:sis|tic)\b", before=r"pleura\w*\W+(?:\w+\W+)?$"),
    _rule("Lung Opacity",
          r"\binterstiti(?:al|um)\s+(?:\w+\s+){0,2}?(?:markings?|opacit\w+|pattern|"
          r"(?:lung\s+)?disease|changes?|thickening|infiltrat\w*|process|abnormalit\w+|"
          r"densit\w+)"),
    _rule("Lung Opacity",
          r"\b(?:increased|prominent|coarse(?:ned)?|accentuated|chronic|reticular)\s+"
          r"(?:(?!bronchovascular|vascular)\w+\s+){0,2}?markings\b(?!\s+of\s+the\s+"
          r"(?:broncho)?vascul)"),
    _rule("Lung Opacity",
          r"\b(?:lung|interstitial|parenchymal)\s+markings\b|\bcrowded\s+markings\b"),
    _rule("Lung Opacity", r"\breticul(?:ar|ation|onodular)\b|\bground[\s-]?glass\b|"
          r"\bhaz(?:y|iness)\b"),
    # Edema.
    _rule("Edema", r"\bedema\b", before=r"(?:soft\s+tissue|subcutaneous|extremity|tissue|"
          r"wall|scalp)\W+$"),
    _rule("Edema", r"\b(?:vascular|venous|pulmonary|interstitial|hilar)\s+(?:\w+\s+)?"
          r"(?:congestion|engorgement|redistribution|plethora|indistinctness)\b|"
          r"\bcongesti(?:on|ve)\b|\bheart\s+failure\b|\bchf\b|\bfluid\s+overload\b|"
          r"\bcephalization\b|\bkerley\b|\bvascular\s+prominence\b|"
          r"\bindistinct\s+(?:pulmonary\s+)?vascula\w*|\bprominen(?:t|ce\s+of\s+the)\s+"
          r"(?:pulmonary\s+)?(?:vascula\w+|vessels)"),
    _rule("Edema", r"\b" + _ORGAN_VESSELS + _NEG_GAP + _NORMAL + r"\b", _NEG),
    _rule("Edema", r"\bnormal\s+(?:pulmonary\s+)?(?:vascularity|vasculature)\b", _NEG),
    # Consolidation.
    _rule("Consolidation", r"\bconsolidat(?:ion|ions|ive|ed)\b"),
    # Pneumonia.
    _rule("Pneumonia", r"\b(?:broncho)?pneumoni(?:a|as|c)\b|\binfecti(?:on|ons|ous|ve)\b",
          before=r"(?:urinary|urinary\s+tract|skin|wound|viral|sinus|ear|granulomatous|"
                 r"fungal\s+or\s+granulomatous)\W+$"),
    # Atelectasis.
    _rule("Atelectasis", r"\batelecta(?:sis|ses|tic)\b"),
    _rule("Atelectasis", r"\bcollapsed?\b",
          before=r"(?:vertebra\w*|spine|spinal|compression|body|bodies|t\d+|l\d+)\W+(?:\w+\W+)?$",
          after=r"^\W+(?:of\s+(?:the\s+)?)?(?:\w+\s+)?(?:vertebra|body|bodies|spine|t\d|l\d)"),
    # Pneumothorax.
    _rule("Pneumothorax", r"\b(?:hydro|hemo)?pneumo[\s-]?thora(?:x|ces|xes)\b|\bptx\b|"
          r"\bpleural\s+air\b"),
    # Pleural Effusion.
    _rule("Pleural Effusion", r"\beffusions?\b",
          before=r"(?:pericardial|joint|knee|shoulder|glenohumeral|elbow|hip)\W+(?:\w+\W+)?$"),
    _rule("Pleural Effusion", r"\bpleural\s+fluid\b|\bhydro(?:pneumo)?thora(?:x|ces)\b|"
          r"\bfissural\s+fluid\b|\bfluid\s+(?:with)?in\s+the\s+(?:\w+\s+){0,2}?fissures?\b"),
    # Pleural Other.
    _rule("Pleural Other",
          r"\bpleura[l]?\s+(?:\w+\s+)?(?:thickening|plaques?|calcifications?|scar\w*|fibrosis|"
          r"reaction)|\bthickening\s+of\s+the\s+(?:\w+\s+)?pleura|\bfibrothorax\b|"
          r"\bpleuro[\s-]?parenchymal\s+(?:scar\w*|thickening|changes?)|\bapical\s+(?:pleural\s+)?"
          r"capping\b|\bpleural\s+based\s+(?:scar\w*|thickening)"),
    # The fissures are folds of the visceral pleura: a thickened fissure is pleural thickening.
    _rule("Pleural Other",
          r"\bfissur(?:al|e)\s+thickening\b|\bthicken(?:ed|ing)\s+(?:of\s+)?(?:the\s+)?"
          r"(?:(?:right|left|minor|major|horizontal|oblique|interlobar)\s+){0,2}fissures?\b"),
    # Fracture.
    _rule("Fracture", r"\bfractur(?:e|es|ed)\b|\bfx\b"),
    # Support Devices.
    _rule("Support Devices",
          r"\b(?:endotracheal|et|nasogastric|ng|orogastric|og|feeding|chest|enteric|tracheostomy|"
          r"trach|gastrostomy|dobb?hoff|thoracostomy|pigtail|drainage|mediastinal|nasoenteric|"
          r"nasojejunal|ngt|ogt)\s+tubes?\b|\btubes?\s+(?:and|or)\s+lines?\b|"
          r"\blines?\s+(?:and|or)\s+tubes?\b|\b(?:endotracheal|nasogastric|tracheostomy|"
          r"orogastric)\b|\bett\b|\btubing\b"),
    _rule("Support Devices",
          r"\bcatheters?\b|\bpicc\b|\b(?:central|venous|arterial|swan[\s-]?ganz|ij|jugular|"
          r"subclavian|dialysis|hemodialysis|support|monitoring|femoral|midline)\s+"
          r"(?:venous\s+)?lines?\b|\bport[\s-]?a[\s-]?cath\b|\bportacath\b|\bmediport\b|"
          r"\b(?:chest|infusion|venous|power|subcutaneous)\s+port\b"),
    _rule("Support Devices",
          r"\b(?:pacemakers?|pacers?|aicds?|icds?|defibrillators?|cardioverter|loop\s+recorder|"
          r"generator|(?:neuro|nerve\s+)?stimulators?)\b|\bleads?\b(?!\s+to\b)|\bwires?\b|"
          r"\bclips?\b|\bsutures?\b|\bsuture\s+material\b|\bstaples\b|\bstents?\b|"
          r"\bendografts?\b|\bhardware\b|\bscrews?\b|\b(?:fixation|surgical|metallic)\s+plates?\b|"
          r"\bplates?\s+and\s+screws?\b|\b(?:harrington|spinal|fusion|fixation)\s+rods?\b|"
          r"\b(?:ivc|vena\s+cava(?:l)?)\s+filter\b|\bcoils?\b|\bballoon\s+pump\b|\biabp\b|"
          r"\blvad\b|\bventricular\s+assist\s+device\b|\bdrains?\b|\bshunt\s+(?:tubing|catheter)\b|"
          r"\bdevices?\b|\bimplanted\b|\bcerclage\b|\bannuloplasty\b|\bmitraclip\b|"
          r"\b(?:tavr|tavi)\b|\bfilter\b|\banchors?\b|"
          r"\b(?:its|with|distal)\s+(?:distal\s+)?tips?\b|"
          r"\bxxxx\s+tip\b|\bchest\s+xxxx\b|\bxxxx-a-xxxx\b|\btip\s+(?:\w+\s+){0,5}?(?:svc|"
          r"superior\s+vena\s+cava|cavo-?atrial|caval\s+atrial|right\s+atrium|atriocaval|"
          r"brachiocephalic)|\bin\s+the\s+(?:distal\s+|proximal\s+|mid\s+|upper\s+|lower\s+)?svc\b",
          before=_DEVICE_BEFORE_EXCLUDE),
    _rule("Support Devices",
          r"\b(?:prosthetic|mechanical|bioprosthetic|artificial|replaced)\s+(?:\w+\s+)?valves?\b|"
          r"\bvalve\s+(?:replacement|prosthes[ie]s|repair|ring)\b|\bprosthes[ie]s\b|"
          r"\barthroplast(?:y|ies)\b",
          before=_DEVICE_BEFORE_EXCLUDE),
)

# Words that can start a mention: a cheap pre-filter so sentences without any are skipped.
_TRIGGER_RE = re.compile(
    r"cardi|heart|mediastin|nodul|mass|lump|lesion|cavit|neoplas|tumo|malig|metast|carcinom|"
    r"opac|infiltr|air[\s-]?space|densit|scar|fibro|interstiti|marking|reticul|glass|haz|"
    r"edema|conges|failure|"
    r"chf|overload|cephaliz|kerley|vascul|vessel|consolid|pneumo|infect|atelect|collaps|ptx|"
    r"pleura|effusion|fluid|fibrothorax|capping|fissur|fractur|fx|tube|line|cath|picc|port|pace|"
    r"aicd|icd|defib|recorder|generator|stimulat|lead|wire|clip|sutur|staple|stent|graft|"
    r"hardware|screw|plate|rod|filter|coil|pump|iabp|lvad|device|drain|shunt|implant|cerclage|"
    r"annulo|mitraclip|tav|valve|prosthe|arthroplast|ett|ngt|ogt|trach|hydrothora|megal|tip|"
    r"xxxx|svc|anchor")


def may_mention(sentence_lc: str) -> bool:
  """Cheap test: can this lower-cased sentence contain any mention at all?"""
  return _TRIGGER_RE.search(sentence_lc) is not None


def may_mention_finding(sentence_lc: str) -> bool:
  """True when a lower-cased text holds a mention whose rule reads cues (not a normality rule)."""
  return any(rule.status is None and rule.pattern.search(sentence_lc)
             for rule, _, _ in find_rule_matches(sentence_lc))


def _by_category() -> tuple[tuple[re.Pattern, tuple[MentionRule, ...]], ...]:
  """Rules grouped by category, each group behind one combined pre-filter pattern."""
  groups: dict[int, list[MentionRule]] = {}
  for rule in RULES:
    groups.setdefault(rule.category, []).append(rule)
  return tuple((re.compile("|".join(f"(?:{r.pattern.pattern})" for r in rules)), tuple(rules))
               for rules in groups.values())


_GROUPS = _by_category()


# A sentence that names what the previous one described ("These likely represent calcified
# granulomas."): its words count as the previous sentence's after-context for exclusions.
_NAMING_FOLLOWER_RE = re.compile(r"^\W*(?:this|these|it|they|both|which)\b")


def names_previous(sentence_lc: str) -> bool:
  """True when a lower-cased sentence starts by pointing back ("this", "these", "it", ...)."""
  return _NAMING_FOLLOWER_RE.match(sentence_lc) is not None


def find_rule_matches(sentence_lc: str, following: str = ""
                      ) -> list[tuple[MentionRule, int, int]]:
  """All rule matches in a lower-cased sentence, after context exclusions.

  Args:
    sentence_lc: the lower-cased sentence.
    following: a lower-cased next sentence that points back at this one (names_previous), read
      as a continuation of this sentence's clause by the after-context exclusions only.

  Returns:
    (rule, start, end) tuples in order of start.
  """
  out = []
  if not may_mention(sentence_lc):
    return out
  after_text = f"{sentence_lc.rstrip(' .')}, {following}" if following else sentence_lc
  for group_pattern, rules in _GROUPS:
    if group_pattern.search(sentence_lc) is None:
      continue
    for rule in rules:
      for m in rule.pattern.finditer(sentence_lc):
        start, end = m.start(), m.end()
        if rule.exclude_before is not None and rule.exclude_before.search(
            sentence_lc, max(0, start - rule.before_chars), start):
          continue
        if rule.exclude_after is not None and rule.exclude_after.search(
            after_text[end:end + rule.after_chars]):
          continue
        out.append((rule, start, end))
  out.sort(key=lambda t: (t[1], t[2]))
  return out
