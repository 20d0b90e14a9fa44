"""Concord's own vocabulary for the 13 CheXpert findings and the triggers around them.

Patterns are regular expressions over lower-cased text, matched at word
boundaries.  Within one observation, list longer phrases first; across
observations, :data:`MENTION_ORDER` decides which observation claims a span
when two could (e.g. "pleural effusion" before "effusion", "hydropneumothorax"
for two observations at once).
"""

from __future__ import annotations

# --------------------------------------------------------------------------- mentions

_S = r"(?:es|s)?"  # optional plural

MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"enlarged\s+cardiomediastin(?:um|al\s+(?:silhouette|contours?|shadow))",
        r"cardiomediastinal\s+(?:enlargement|widening)",
        r"(?:widened|widening\s+of\s+the|wide|enlarged|prominent)\s+(?:superior\s+)?mediastin(?:um|al\s+(?:silhouette|contours?|shadow))",
        r"mediastinal\s+(?:widening|enlargement|prominence)",
        r"widening\s+of\s+the\s+(?:superior\s+)?mediastinum",
    ),
    "Cardiomegaly": (
        r"cardiomegal(?:y|ly|ic)",
        r"cardiac\s+(?:enlargement|dilatation|dilation)",
        r"enlargement\s+of\s+the\s+(?:heart|cardiac\s+silhouette)",
        r"(?:enlarged|large|dilated)\s+(?:heart|cardiac\s+(?:silhouette|shadow|contour))",
    ),
    "Lung Opacity": (
        r"air[\s-]*space\s+(?:disease|process|opacit(?:y|ies)|opacification|densit(?:y|ies))",
        r"ground[\s-]+glass(?:\s+opacit(?:y|ies))?",
        r"opacit(?:y|ies)",
        r"opacification",
        r"opacified",
        r"infiltrat(?:e|es|ion|ive\s+process)",
        r"hazy\s+(?:opacit(?:y|ies)|densit(?:y|ies))",
        r"haziness",
        r"densit(?:y|ies)",
        r"parenchymal\s+(?:abnormalit(?:y|ies)|process)",
    ),
    "Lung Lesion": (
        r"nodular\s+(?:opacit(?:y|ies)|densit(?:y|ies)|opacification|lesions?)",
        r"cavitary\s+lesions?",
        r"(?:lung|pulmonary)\s+lesions?",
        r"nodul(?:e|es|arity)",
        r"mass" + _S,
        r"tumou?rs?",
        r"neoplasm" + _S,
        r"carcinoma" + _S,
        r"(?:lung\s+)?cancer",
        r"lesions?",
    ),
    "Edema": (
        r"(?:pulmonary\s+|interstitial\s+|alveolar\s+|perihilar\s+)?o?edema",
        r"(?:pulmonary\s+)?vascular\s+(?:congestion|engorgement|prominence)",
        r"pulmonary\s+congestion",
        r"congestive\s+(?:heart\s+)?failure",
        r"heart\s+failure",
        r"chf",
        r"fluid\s+overload",
        r"kerley\s+b\s+lines",
        r"septal\s+lines",
        r"congestion",
    ),
    "Consolidation": (
        r"consolidat(?:ion|ions|ive\s+(?:opacit(?:y|ies)|process|changes?)|ed)",
    ),
    "Pneumonia": (
        r"(?:broncho)?pneumonias?",
        r"infectious\s+(?:process|etiology|infiltrate)",
        r"infection" + _S,
    ),
    "Atelectasis": (
        r"atelecta(?:sis|ses|tic(?:\s+changes?)?)",
        r"(?:lobar|segmental|subsegmental|lung|left\s+lower\s+lobe|right\s+lower\s+lobe)\s+collapse",
        r"collapse(?:d)?",
    ),
    "Pneumothorax": (
        r"hydropneumothorax",
        r"pneumothora(?:x|ces|xes)",
        r"ptx",
    ),
    "Pleural Effusion": (
        r"hydropneumothorax",
        r"pleural\s+effusions?",
        r"pleural\s+fluid",
        r"hydrothorax",
        r"(?<!pericardial\s)(?<!joint\s)effusions?",
    ),
    "Pleural Other": (
        r"pleural\s+(?:thickening|plaques?|scarring|calcifications?|reaction)",
        r"fibrothorax",
        r"pleural[\s-]+based\s+(?:thickening|density)",
    ),
    "Fracture": (
        r"fractur(?:e|es|ed)",
        r"fx",
    ),
    "Support Devices": (
        r"(?:endotracheal|et|tracheostomy|trach|nasogastric|ng|orogastric|og|enteric|feeding|"
        r"dobhoff|chest|gastric|g-j|gj|j)\s+tubes?",
        r"ett|ngt|ogt",
        r"(?:central\s+venous|venous|picc|swan[\s-]*ganz|pulmonary\s+artery|pigtail|dialysis|"
        r"hemodialysis|midline|foley|port)\s+(?:catheters?|lines?)",
        r"(?:central|picc|subclavian|jugular|ij|arterial|port[\s-]*a[\s-]*cath)\s+lines?",
        r"picc",
        r"port[\s-]*a[\s-]*cath",
        r"(?:chest\s+wall|chest|mediport|power|infusion|subcutaneous)\s+port",
        r"port",
        r"catheters?",
        r"(?:pacemaker|pacer|aicd|icd|defibrillator)(?:\s+(?:leads?|wires?|generator|device))?",
        r"(?:pacing|transvenous)\s+(?:leads?|wires?)",
        r"(?:sternotomy|sternal)\s+wires?",
        r"(?:surgical|vascular)\s+clips",
        r"lines\s+(?:and|or)\s+tubes|tubes\s+(?:and|or)\s+lines",
        r"(?:support|medical|monitoring|indwelling)\s+devices?",
        r"(?:intra-?aortic\s+)?balloon\s+pump",
        r"lvad|impella|ecmo\s+cannulas?",
        r"(?:valve\s+replacement|prosthetic\s+(?:mitral|aortic)\s+valve)",
        r"(?:tracheostomy|trach)",
        r"stents?",
        r"drains?",
        r"tubes?",
    ),
}

#: Priority among observations when patterns overlap at one position.
MENTION_ORDER: tuple[str, ...] = (
    "Pneumothorax",  # hydropneumothorax claims both; see DOUBLE_MENTIONS
    "Pleural Other",
    "Pleural Effusion",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Consolidation",
    "Pneumonia",
    "Edema",
    "Atelectasis",
    "Fracture",
    "Support Devices",
    "Lung Opacity",
)

#: One surface phrase that names two observations.
DOUBLE_MENTIONS: dict[str, tuple[str, ...]] = {
    "hydropneumothorax": ("Pneumothorax", "Pleural Effusion"),
}

# Findings that are not among the 13 but make a study abnormal (they block
# "No Finding", as in CheXpert's rule).
OTHER_FINDINGS: tuple[str, ...] = (
    r"emphysema(?:tous)?", r"copd", r"hyperinflat(?:ion|ed)", r"hyperexpan(?:sion|ded)",
    r"blunting", r"eventration", r"scoliosis", r"kyphosis", r"degenerative",
    r"calcifi(?:ed|cation|cations)", r"hiatal\s+hernia", r"hernia",
    r"bronchiectasis", r"bronchiolitis", r"bullae|bullous", r"scarring", r"fibrosis|fibrotic",
    r"granulomas?", r"metasta(?:sis|ses|tic)", r"pneumomediastinum", r"pneumoperitoneum",
    r"free\s+air", r"subcutaneous\s+(?:emphysema|air)", r"lymphadenopathy",
    r"pericardial\s+effusion", r"(?:elevat(?:ed|ion)\s+(?:of\s+the\s+)?(?:left|right)?\s*hemidiaphragm)",
    r"volume\s+loss", r"deformity", r"hematoma", r"hemorrhage", r"contusion",
    r"aspiration", r"osteopenia", r"atheroscleros(?:is|tic)", r"(?:aortic\s+)?tortuosity|tortuous",
    r"interstitial\s+(?:markings|abnormality|lung\s+disease|opacities)", r"cephalization",
    r"thickening", r"hilar\s+(?:enlargement|prominence|adenopathy)", r"cavitation",
)

# Subject-and-predicate statements about heart and mediastinum.  "Heart size is
# normal" says Cardiomegaly is absent; "the heart is mildly enlarged" says it is
# present; "heart size is stable" says nothing.
HEART_SUBJECTS = (
    r"heart\s+size",
    r"size\s+of\s+the\s+(?:heart|cardiac\s+silhouette)",
    r"cardiac\s+(?:silhouette|size|contours?|shadow|diameter)(?:\s+size)?",
    r"heart(?!\s+failure)",
)
MEDIASTINUM_SUBJECTS = (
    r"cardiomediastinal\s+(?:silhouette|contours?|size|shadow)s?",
    r"(?:superior\s+)?mediastinal\s+(?:silhouette|contours?|width|structures|shadow)s?",
    r"(?:superior\s+)?mediastinum",
    r"(?:hilar|hila)\s+and\s+mediastinal\s+(?:contours?|silhouettes?)",
    r"mediastinal\s+and\s+hilar\s+(?:contours?|silhouettes?|structures)",
)
BOTH_SUBJECTS = (
    r"cardiac\s*(?:,|and)\s*mediastinal(?:\s*(?:,|and)\s*hilar)?\s+(?:contours?|silhouettes?)",
    r"heart\s+and\s+mediastinum",
)
ABNORMAL_PREDICATE = r"(?:enlarged|enlargement|large|prominent|increased|dilated|widened|widening|wide)"
NORMAL_PREDICATE = (
    r"(?:normal(?:\s+in\s+(?:size|contour|width))?|normal[\s-]+sized?|within\s+normal\s+limits|"
    r"unremarkable|(?:at\s+)?(?:the\s+)?upper\s+limits?\s+of\s+normal|top[\s-]+(?:of\s+)?normal|"
    r"upper[\s-]+normal|not\s+(?:enlarged|widened|dilated|prominent)|small)"
)
BORDERLINE_PREDICATE = r"(?:borderline(?:\s+(?:enlarged|in\s+size|large|prominent|size))?)"

# --------------------------------------------------------------------------- triggers
# Kinds: PREN pre-negation, POSTN post-negation, BIN negation on either side,
# PREU pre-uncertainty,
# POSTU post-uncertainty, BIU uncertainty on both sides ("versus"),
# PSEUDO looks like a trigger but is not one, TERM ends a trigger's scope.

TRIGGERS: dict[str, tuple[str, ...]] = {
    "PSEUDO": (
        r"(?:there\s+(?:is|are|has\s+been|have\s+been)\s+)?no\s+(?:significant\s+|definite\s+|suspicious\s+|appreciable\s+|substantial\s+)?"
        r"(?:interval\s+)?(?:change|increase|decrease|worsening|improvement|progression|enlargement)",
        r"not\s+(?:significantly\s+|substantially\s+|markedly\s+)?(?:changed|increased|decreased|worsened|improved)",
        r"without\s+(?:significant\s+|definite\s+|interval\s+)*(?:change|increase|decrease|worsening|improvement)",
        r"not\s+only", r"not\s+necessarily", r"not\s+extend", r"not\s+cause", r"not\s+drain",
        r"gram[\s-]+negative", r"without\s+difficulty", r"not\s+certain\s+(?:if|whether)",
        r"(?:has|have|had)\s+not\s+(?:yet\s+)?(?:resolved|cleared|improved|been\s+removed)",
        r"not\s+(?:resolved|cleared|absent|been\s+removed|removed)",
        r"no\s+(?:other|further|additional)\s+(?:change|abnormalit(?:y|ies))",
        r"not\s+well\s+(?:seen|visualized|evaluated|assessed)",
        r"no\s+longer\s+(?:than|necessary)",
        # "enteric tube ..., tip not seen": the tip, not the tube, is unseen.
        r"(?:tip|end|course|distal\s+(?:tip|end))\s+(?:is\s+|was\s+)?(?:not\s+(?:well\s+)?|poorly\s+)"
        r"(?:seen|visualized|identified|imaged|included)",
    ),
    "POSTU": (
        r"(?:is|are|was|were)?\s*(?:cannot|can\s*not|can't|could\s+not)\s+be\s+(?:entirely\s+|completely\s+|totally\s+)?(?:excluded|ruled\s+out)",
        r"(?:is|are|has|have)?\s*(?:not|n't)\s+(?:been\s+)?(?:entirely\s+|completely\s+)?(?:excluded|ruled\s+out)",
        r"(?:would\s+be\s+|is\s+)?difficult\s+to\s+exclude",
        r"(?:is|are)\s+(?:also\s+)?(?:possible|suspected|questioned|questionable|likely|probable|favored|not\s+excluded|a\s+consideration|considerations?|unlikely|in\s+question|equivocal)",
        r"(?:may|might|could)\s+(?:be\s+)?(?:present|seen|developing|noted|forming)",
        r"(?:is|are)\s+(?:a\s+)?(?:differential\s+)?considerations?",
        r"\?",
    ),
    "PREU": (
        r"(?:cannot|can\s*not|can't|could\s+not)\s+(?:entirely\s+|completely\s+)?(?:exclude|rule\s+out)",
        r"(?:may|might|could|can)\s+(?:also\s+)?(?:represent|reflect|indicate|be\s+due\s+to|be|have|relate\s+to|correspond\s+to|account\s+for)",
        r"(?:possible|possibly|probable|probably|likely|most\s+likely|more\s+likely|presumed|presumably|potential|potentially)",
        r"(?:questionable|question\s+of|suspicious\s+for|suspected|suspicion\s+(?:of|for)|"
        r"concerning\s+for|concern\s+for|worrisome\s+for|suggestive\s+of|suggests?|suggesting|"
        r"raising\s+(?:the\s+)?(?:possibility|concern)\s+(?:of|for)|"
        r"(?:the\s+)?possibility\s+of|differential\s+(?:diagnosis\s+)?(?:includes?|of)|"
        r"equivocal(?:\s+for)?|borderline|indeterminate|uncertain|unclear\s+if|"
        r"(?:rule\s+out|r/o|evaluate\s+for|assess\s+for|to\s+exclude)|"
        r"may|might|could|either|perhaps)",
    ),
    "BIU": (
        r"versus|vs\.?",
        r"and\s*/\s*or",
    ),
    "POSTN": (
        r"(?:is|are|was|were|has\s+been|have\s+been)\s+(?:not\s+|no\s+longer\s+)(?:seen|visualized|identified|"
        r"appreciated|demonstrated|present|evident|apparent|detected|noted)",
        r"not\s+(?:seen|visualized|identified|appreciated|demonstrated|present|evident|apparent|detected|noted)",
        r"no\s+longer\s+(?:seen|visualized|identified|appreciated|demonstrated|present|evident|apparent)",
        r"(?:has|have|had)\s+(?:since\s+|now\s+|completely\s+|nearly\s+|largely\s+)?(?:resolved|cleared|disappeared)",
        r"(?:has|have|had)\s+(?:since\s+|now\s+)?been\s+(?:removed|withdrawn|discontinued|resolved|ruled\s+out|excluded)",
        r"(?:is|are|was|were)\s+(?:now\s+)?(?:absent|resolved|gone|removed|excluded|ruled\s+out|negative)",
        r"(?:was|were)\s+(?:subsequently\s+)?removed",
        r"ruled\s+out",
    ),
    # Either side, short reach: "resolved right pneumothorax", "effusion resolved".
    "BIN": (
        r"(?:now\s+|since\s+|completely\s+)?(?:resolved|removed|extubated)",
    ),
    "PREN": (
        r"no\s+(?:radiographic\s+|radiologic\s+|definite\s+|convincing\s+|clear\s+|obvious\s+|"
        r"significant\s+|further\s+|other\s+|new\s+|residual\s+|recurrent\s+|acute\s+|focal\s+|"
        r"gross\s+|overt\s+|appreciable\s+|visible\s+|discernible\s+|frank\s+|large\s+|"
        r"evident\s+|suspicious\s+|additional\s+)*"
        r"(?:evidence|signs?|findings?|indication|suggestion|features?|sign)\s+(?:of|for|to\s+suggest|suggesting)",
        r"without\s+(?:any\s+)?(?:radiographic\s+|definite\s+|convincing\s+)?(?:evidence|signs?|findings?)\s+(?:of|for)",
        r"(?:there\s+(?:is|are)\s+)?no",
        r"(?:negative|neg|-ve)\s+for",
        r"(?:not|in)\s*consistent\s+with", r"no\s+known",
        r"free\s+of", r"clear\s+of", r"absence\s+of", r"absent",
        r"without", r"w/o", r"nor", r"neither",
        r"(?:interval\s+|near[\s-]complete\s+|complete\s+|nearly\s+complete\s+)?(?:resolution|resolved|removal|clearing)(?:\s+of)?",
        r"(?:has|have|had)\s+been\s+removed",
        r"ruled\s+out\s+for|rules\s+out",
        r"not\s+(?:demonstrate|show|reveal|have|see|appear|suggest|identify)",
        r"(?:did|does|do)\s+not\s+(?:demonstrate|show|reveal|have|see|appear|suggest|identify|"
        r"exhibit|complain\s+of|report|endorse|experience|develop)",
        r"(?:fails?|failed)\s+to\s+(?:reveal|demonstrate|show)",
        r"(?:denies|denied|denying|deny)(?:\s+any)?",
        r"never\s+(?:had|developed)?", r"unremarkable\s+for",
        r"not", r"n't", r"cannot\s+(?:see|identify|visualize)",
        r"no\s+longer",
        r"(?:is|are)\s+(?:not|no\s+longer)\s+(?:seen|present|visualized)",
    ),
    "TERM": (
        r"but", r"however", r"although", r"though", r"yet", r"except(?:\s+for)?",
        r"with\s+the\s+exception\s+of", r"aside\s+from", r"apart\s+from", r"other\s+than",
        r"which", r"whereas", r"while", r"nevertheless", r"otherwise",
        r"(?:secondary|due)\s+to", r"(?:as\s+)?(?:the\s+)?(?:cause|source|origin|reason|etiology)\s+(?:of|for)",
        r"and\s+(?:there|the|a|an)",
        r";", r":", r"\.(?!\d)",
    ),
}

# --------------------------------------------------------------------------- attributes

LATERALITY_WORDS: dict[str, str] = {
    "left": "left", "left-sided": "left", "leftward": "left", "l": "left",
    "right": "right", "right-sided": "right", "rightward": "right", "r": "right",
    "bilateral": "bilateral", "bilaterally": "bilateral", "both": "bilateral",
    "bibasilar": "bilateral", "bibasal": "bilateral", "biapical": "bilateral",
    "bilat": "bilateral",
}

SEVERITY_WORDS: dict[str, str] = {
    "trace": "small", "tiny": "small", "minimal": "small", "minimally": "small", "small": "small",
    "smaller": "small", "minute": "small", "subtle": "small",
    "mild": "mild", "mildly": "mild", "slight": "mild", "slightly": "mild",
    "moderate": "moderate", "moderately": "moderate", "moderate-sized": "moderate",
    "medium": "moderate", "small-to-moderate": "moderate", "mild-to-moderate": "moderate",
    "large": "large", "larger": "large", "massive": "large", "extensive": "large",
    "large-sized": "large", "moderate-to-large": "large", "sizable": "large", "big": "large",
    "severe": "severe", "severely": "severe", "marked": "severe", "markedly": "severe",
    "moderate-to-severe": "severe",
}

LOCATION_PATTERN = (
    r"(?:(?:left|right)\s+)?(?:upper|middle|mid|lower)\s+(?:lobes?|lung(?:\s+zones?)?|zones?)"
    r"|lingula(?:r)?|(?:(?:left|right)\s+)?(?:lung\s+)?(?:bases?|apex|apices|apical|basilar|basal)"
    r"|(?:left|right)\s+(?:lung|hemithorax|hilum|costophrenic\s+angle)"
    r"|retrocardiac|perihilar|infrahilar|suprahilar|hilar|midlung|mid\s+lung"
    r"|costophrenic\s+angles?|hemithora(?:x|ces)|lungs?"
)
