"""Report graphs: the built-in extractor, PyG conversion, and the RadGraph adapter."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from core_model.text.graph import (
    ANATOMY,
    EMPTY_NODE_TEXT,
    NODE_LABELS,
    OBS_ABSENT,
    OBS_PRESENT,
    OBS_UNCERTAIN,
    RELATIONS,
    BuiltinExtractor,
    GraphExtractor,
    extract_graph,
    graph_to_data,
    normalise_label,
    tokenize,
)
from core_model.text.labeler import label_sentence
from core_model.text.observations import Assertion
from core_model.text.radgraph_adapter import (
    RadGraphError,
    RadGraphPackageExtractor,
    RadGraphUnavailable,
    get_extractor,
    read_radgraph_output,
)
from core_model.text.vocabulary import NORMAL_PREDICATE

SENTENCES = [
    "Small left pleural effusion.",
    "No pleural effusion.",
    "There is no focal consolidation, pleural effusion or pneumothorax.",
    "The lungs are clear and well expanded.",
    "Heart size is normal.",
    "The heart is not enlarged.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Heart size and mediastinal contours are normal.",
    "Right lower lobe opacity concerning for pneumonia.",
    "Increased opacity in the left lower lobe may represent atelectasis or pneumonia.",
    "Patchy bibasilar opacities likely reflect atelectasis, though infection cannot be excluded.",
    "Possible small left effusion.",
    "Mild pulmonary vascular congestion without overt edema.",
    "No acute cardiopulmonary process.",
    "Mild degenerative changes of the thoracic spine.",
    "Calcified granuloma in the right upper lobe.",
    "The aorta is tortuous and calcified.",
    "Osseous structures are unremarkable.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "A right internal jugular central venous catheter ends in the mid SVC.",
    "Blunting of the left costophrenic angle may reflect a small effusion or pleural thickening.",
    "Low lung volumes with bibasilar atelectasis.",
    "Moderate-sized right pleural effusion (3.5 cm) is unchanged.",
    "Bilateral pleural effusions, right greater than left, with adjacent atelectasis.",
    "Pneumothorax cannot be excluded.",
    "Elevation of the right hemidiaphragm is unchanged.",
    "Emphysema.",
    "Stable 50%.",
]

NORMAL = re.compile(rf"\b(?:{NORMAL_PREDICATE})\b")

REPORT = (
    "EXAMINATION: Chest PA and lateral.\n"
    "INDICATION: Fever, r/o pneumonia.\n"
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.\n"
    "IMPRESSION: No acute cardiopulmonary process."
)


def entity(graph: dict, tokens: str, label: str | None = None) -> tuple[str, dict]:
    """The one entity with these tokens (and label, when given)."""
    found = [
        (k, e)
        for k, e in graph["entities"].items()
        if e["tokens"] == tokens and (label is None or e["label"] == label)
    ]
    assert len(found) == 1, (tokens, graph["entities"])
    return found[0]


def has_relation(graph: dict, source: str, relation: str, target: str) -> bool:
    """True when an entity ``source`` has ``relation`` to an entity ``target`` (by tokens)."""
    ents = graph["entities"]
    return any(
        e["tokens"] == source and r == relation and ents[t]["tokens"] == target
        for e in ents.values()
        for r, t in e["relations"]
    )


# --------------------------------------------------------------------------- tokens


def test_tokenize_follows_radgraph_xl() -> None:
    words = [t for t, _, _ in tokenize("Effusion (3.5 cm). Stable 50%, fine.")]
    assert words == [
        "Effusion", "(", "3", ".", "5", "cm", ")", ".", "Stable", "50", "%", ",", "fine", ".",
    ]
    text = "Right-sided PICC line."
    for tok, s, e in tokenize(text):
        assert text[s:e] == tok


# --------------------------------------------------------------------------- shape


@pytest.mark.parametrize("text", [*SENTENCES, REPORT, " ".join(SENTENCES)])
def test_graph_shape_and_invariants(text: str) -> None:
    graph = extract_graph(text)
    assert set(graph) == {"text", "entities", "data_source", "data_split"}
    assert graph["data_source"] is None and graph["data_split"] == "inference"
    tokens = graph["text"].split(" ")
    ents = graph["entities"]
    assert list(ents) == [str(i) for i in range(1, len(ents) + 1)]
    previous_end = -1
    for key, e in ents.items():
        assert set(e) == {"tokens", "label", "start_ix", "end_ix", "relations"}
        assert isinstance(e["start_ix"], int) and isinstance(e["end_ix"], int)
        assert previous_end < e["start_ix"] <= e["end_ix"] < len(tokens)
        previous_end = e["end_ix"]
        assert e["tokens"] == " ".join(tokens[e["start_ix"]:e["end_ix"] + 1])
        assert e["label"] in (ANATOMY, OBS_PRESENT, OBS_ABSENT, OBS_UNCERTAIN)
        for relation, target in e["relations"]:
            assert relation in RELATIONS
            assert target in ents and target != key
            if relation == "located_at":
                assert e["label"] != ANATOMY and ents[target]["label"] == ANATOMY
            if relation == "suggestive_of":
                assert ANATOMY not in (e["label"], ents[target]["label"])
    json.dumps(graph)  # serialisable as RadGraph's output is


def test_indices_are_global_over_sections_and_sentences() -> None:
    graph = extract_graph(REPORT)
    assert graph["text"].startswith("The lungs are clear .")
    assert "pneumonia" not in graph["text"]  # the indication is not read
    assert "EXAMINATION" not in graph["text"] and "IMPRESSION" not in graph["text"]
    _, process = entity(graph, "process")
    assert graph["text"].split(" ")[process["start_ix"]] == "process"
    assert process["start_ix"] > 10
    assert process["label"] == OBS_ABSENT


# --------------------------------------------------------------------------- content


def test_negated_finding_is_definitely_absent_and_located_at_pleural() -> None:
    graph = extract_graph("No pleural effusion.")
    _, effusion = entity(graph, "effusion", OBS_ABSENT)
    pleural_key, _ = entity(graph, "pleural", ANATOMY)
    assert ["located_at", pleural_key] in effusion["relations"]


def test_negation_list_keeps_every_finding_absent() -> None:
    graph = extract_graph("There is no focal consolidation, pleural effusion or pneumothorax.")
    for word in ("consolidation", "effusion", "pneumothorax", "focal"):
        entity(graph, word, OBS_ABSENT)


def test_uncertain_findings() -> None:
    graph = extract_graph("Possible small left effusion. Pneumothorax cannot be excluded.")
    entity(graph, "effusion", OBS_UNCERTAIN)
    entity(graph, "small", OBS_UNCERTAIN)  # a modifier shares its head's assertion
    entity(graph, "Pneumothorax", OBS_UNCERTAIN)


def test_laterality_and_lobe_modify_the_anatomy() -> None:
    graph = extract_graph("Small left pleural effusion. Right lower lobe consolidation.")
    assert has_relation(graph, "left", "modify", "pleural")
    assert has_relation(graph, "effusion", "located_at", "pleural")
    assert has_relation(graph, "Small", "modify", "effusion")
    assert has_relation(graph, "Right", "modify", "lobe")
    assert has_relation(graph, "lower", "modify", "lobe")
    assert has_relation(graph, "consolidation", "located_at", "lobe")
    entity(graph, "Right", ANATOMY)
    entity(graph, "lower", ANATOMY)


def test_suggestive_of() -> None:
    graph = extract_graph("Right lower lobe opacity concerning for pneumonia.")
    assert has_relation(graph, "opacity", "suggestive_of", "pneumonia")
    assert has_relation(graph, "opacity", "located_at", "lobe")
    entity(graph, "pneumonia", OBS_UNCERTAIN)
    entity(graph, "opacity", OBS_PRESENT)
    graph = extract_graph("Opacity in the left lower lobe may represent atelectasis or pneumonia.")
    assert has_relation(graph, "Opacity", "suggestive_of", "atelectasis")
    assert has_relation(graph, "Opacity", "suggestive_of", "pneumonia")


def test_general_observations_and_anatomy() -> None:
    graph = extract_graph(
        "The lungs are clear. Heart size is normal. The aorta is tortuous. "
        "Osseous structures are unremarkable. Calcified granuloma in the right upper lobe."
    )
    assert has_relation(graph, "clear", "located_at", "lungs")
    assert has_relation(graph, "normal", "located_at", "Heart")
    assert has_relation(graph, "tortuous", "located_at", "aorta")
    assert has_relation(graph, "unremarkable", "located_at", "Osseous structures")
    assert has_relation(graph, "Calcified", "modify", "granuloma")
    assert has_relation(graph, "granuloma", "located_at", "lobe")
    # "normal" is a present observation in RadGraph's schema even though the
    # labeler reads "heart size is normal" as Cardiomegaly absent.
    entity(graph, "normal", OBS_PRESENT)


def test_device_location() -> None:
    graph = extract_graph("Endotracheal tube terminates 4 cm above the carina.")
    assert has_relation(graph, "Endotracheal tube", "located_at", "carina")


@pytest.mark.parametrize("sentence", SENTENCES)
def test_assertions_agree_with_the_labeler(sentence: str) -> None:
    """Every labeler mention has an observation entity in its span with its assertion."""
    label_of = {
        Assertion.PRESENT: OBS_PRESENT,
        Assertion.ABSENT: OBS_ABSENT,
        Assertion.UNCERTAIN: OBS_UNCERTAIN,
    }
    graph = extract_graph(sentence)
    spans = tokenize(sentence)
    labels = label_sentence(sentence)
    for m in labels.mentions + labels.others:
        if m.observation in ("Cardiomegaly", "Enlarged Cardiomediastinum") and NORMAL.search(
            m.text.lower()
        ):
            continue  # normal statements: predicate words keep their own assertion
        inside = [i for i, (_, s, e) in enumerate(spans) if s < m.end and m.start < e]
        found = [
            e["label"]
            for e in graph["entities"].values()
            if e["label"] != ANATOMY and inside[0] <= e["start_ix"] <= inside[-1]
        ]
        assert label_of[m.assertion] in found, (m, graph["entities"])


def test_empty_reports() -> None:
    for text in ("", "   \n\n", "FINDINGS:\nIMPRESSION:"):
        graph = extract_graph(text)
        assert graph == {"text": "", "entities": {}, "data_source": None, "data_split": "inference"}
    with pytest.raises(TypeError):
        extract_graph(None)  # type: ignore[arg-type]


def test_deterministic() -> None:
    text = " ".join(SENTENCES)
    first = json.dumps(extract_graph(text), sort_keys=True)
    for _ in range(3):
        assert json.dumps(extract_graph(text), sort_keys=True) == first
    assert BuiltinExtractor().extract([text, ""]) == [extract_graph(text), extract_graph("")]
    assert isinstance(BuiltinExtractor(), GraphExtractor)


# --------------------------------------------------------------------------- PyG


def test_graph_to_data_shapes() -> None:
    graph = extract_graph("Small left pleural effusion. Right lower lobe opacity concerning for pneumonia.")
    data = graph_to_data(graph)
    n = len(graph["entities"])
    e = sum(len(x["relations"]) for x in graph["entities"].values())
    assert data.num_nodes == n
    assert data.edge_index.shape == (2, e) and data.edge_index.dtype == torch.long
    assert data.edge_type.shape == (e,) and data.edge_type.dtype == torch.long
    assert int(data.edge_type.max()) < len(RELATIONS)
    assert data.node_label.shape == (n,) and data.node_label.dtype == torch.long
    assert data.node_text == [x["tokens"] for x in graph["entities"].values()]
    assert data.x.shape == (n, len(NODE_LABELS))
    assert torch.equal(data.x.argmax(1), data.node_label)
    data.validate(raise_on_error=True)
    # The edge for "effusion located_at pleural".
    eff = data.node_text.index("effusion")
    ple = data.node_text.index("pleural")
    pairs = list(zip(data.edge_index[0].tolist(), data.edge_index[1].tolist(), strict=True))
    k = pairs.index((eff, ple))
    assert RELATIONS[int(data.edge_type[k])] == "located_at"


def test_graph_to_data_node_features() -> None:
    graph = extract_graph("Small left pleural effusion.")
    seen: list[list[str]] = []

    def features(texts: list[str]) -> torch.Tensor:
        seen.append(texts)
        return torch.ones(len(texts), 8)

    data = graph_to_data(graph, node_features=features)
    assert data.x.shape == (4, 8)
    assert seen == [["Small", "left", "pleural", "effusion"]]
    with pytest.raises(ValueError, match="first dimension"):
        graph_to_data(graph, node_features=lambda texts: torch.ones(len(texts) + 1, 8))


def test_empty_graph_gives_one_placeholder_node() -> None:
    data = graph_to_data(extract_graph(""))
    assert data.num_nodes == 1
    assert data.node_text == [EMPTY_NODE_TEXT]
    assert data.edge_index.shape == (2, 0) and data.edge_type.shape == (0,)
    assert NODE_LABELS[int(data.node_label[0])] == "[EMPTY]"
    assert data.x.shape == (1, len(NODE_LABELS))
    seen: list[list[str]] = []
    data = graph_to_data(extract_graph(""), lambda t: seen.append(t) or torch.zeros(len(t), 3))
    assert seen == [[EMPTY_NODE_TEXT]] and data.x.shape == (1, 3)


def test_gcn_pools_a_batch_with_an_empty_graph() -> None:
    from torch_geometric.data import Batch
    from torch_geometric.nn import GCNConv, global_mean_pool

    datas = [graph_to_data(extract_graph(t)) for t in ("", REPORT, SENTENCES[8])]
    batch = Batch.from_data_list(datas)
    conv = GCNConv(len(NODE_LABELS), 4)
    pooled = global_mean_pool(conv(batch.x, batch.edge_index), batch.batch)
    assert pooled.shape == (3, 4)
    assert torch.isfinite(pooled).all()


def test_graph_to_data_reads_legacy_labels_and_rejects_bad_relations() -> None:
    graph = {
        "text": "no effusion left",
        "entities": {
            "1": {"tokens": "effusion", "label": "OBS-DA", "start_ix": 1, "end_ix": 1,
                  "relations": [["located_at", "2"]]},
            "2": {"tokens": "left", "label": "ANAT-DP", "start_ix": 2, "end_ix": 2,
                  "relations": []},
        },
    }
    data = graph_to_data(graph)
    assert [NODE_LABELS[i] for i in data.node_label.tolist()] == [OBS_ABSENT, ANATOMY]
    graph["entities"]["1"]["relations"] = [["causes", "2"]]
    with pytest.raises(ValueError, match="unknown relation"):
        graph_to_data(graph)
    graph["entities"]["1"]["relations"] = [["modify", "9"]]
    with pytest.raises(ValueError, match="missing entity"):
        graph_to_data(graph)


def test_normalise_label() -> None:
    assert normalise_label("OBS-DP") == OBS_PRESENT
    assert normalise_label("OBS-U") == OBS_UNCERTAIN
    assert normalise_label("Observation::measurement::definitely absent") == OBS_ABSENT
    assert normalise_label("Anatomy::measurement::definitely present") == ANATOMY
    with pytest.raises(ValueError):
        normalise_label("Device::present")


# --------------------------------------------------------------------------- radgraph adapter

#: The package's output for two reports, verbatim in its shape: radgraph-xl style
#: labels (with a measurement variant) for "0", the original style for "1".
RADGRAPH_OUTPUT = {
    "0": {
        "text": "no acute cardiopulmonary abnormality . 2 cm nodule",
        "entities": {
            "1": {"tokens": "acute", "label": "Observation::definitely absent",
                  "start_ix": 1, "end_ix": 1, "relations": []},
            "2": {"tokens": "cardiopulmonary", "label": "Anatomy::definitely present",
                  "start_ix": 2, "end_ix": 2, "relations": []},
            "3": {"tokens": "abnormality", "label": "Observation::definitely absent",
                  "start_ix": 3, "end_ix": 3, "relations": [["located_at", "2"]]},
            "4": {"tokens": "2 cm", "label": "Observation::measurement::definitely present",
                  "start_ix": 5, "end_ix": 6, "relations": [["modify", "5"]]},
            "5": {"tokens": "nodule", "label": "Observation::uncertain",
                  "start_ix": 7, "end_ix": 7, "relations": []},
        },
        "data_source": None,
        "data_split": "inference",
    },
    "1": {
        "text": "small left pleural effusion",
        "entities": {
            "1": {"tokens": "small", "label": "OBS-DP", "start_ix": 0, "end_ix": 0,
                  "relations": [["modify", "4"]]},
            "2": {"tokens": "left", "label": "ANAT-DP", "start_ix": 1, "end_ix": 1,
                  "relations": [["modify", "3"]]},
            "3": {"tokens": "pleural", "label": "ANAT-DP", "start_ix": 2, "end_ix": 2,
                  "relations": []},
            "4": {"tokens": "effusion", "label": "OBS-DP", "start_ix": 3, "end_ix": 3,
                  "relations": [["located_at", "3"]]},
        },
        "data_source": None,
        "data_split": "inference",
    },
}


def test_read_radgraph_output_normalises_both_label_styles() -> None:
    graphs = read_radgraph_output(RADGRAPH_OUTPUT)
    assert len(graphs) == 2
    assert [e["label"] for e in graphs[0]["entities"].values()] == [
        OBS_ABSENT, ANATOMY, OBS_ABSENT, OBS_PRESENT, OBS_UNCERTAIN,
    ]
    assert [e["label"] for e in graphs[1]["entities"].values()] == [
        OBS_PRESENT, ANATOMY, ANATOMY, OBS_PRESENT,
    ]
    assert graphs[1]["entities"]["4"]["relations"] == [["located_at", "3"]]
    assert set(graphs[0]) == {"text", "entities", "data_source", "data_split"}
    # JSON text works too, and keys sort numerically ("10" after "2").
    many = {str(i): RADGRAPH_OUTPUT["1"] for i in (10, 2, 0)}
    assert len(read_radgraph_output(json.dumps(many))) == 3
    for g in graphs:
        graph_to_data(g).validate(raise_on_error=True)


def test_read_radgraph_output_drops_dangling_relations() -> None:
    doc = json.loads(json.dumps(RADGRAPH_OUTPUT["1"]))
    doc["entities"]["4"]["relations"].append(["modify", "99"])
    (graph,) = read_radgraph_output({"0": doc})
    assert graph["entities"]["4"]["relations"] == [["located_at", "3"]]


def make_model_dir(root: Path, name: str = "radgraph-xl") -> Path:
    model = root / "models" / name
    (model / "vocabulary").mkdir(parents=True)
    (model / "vocabulary" / "ner_labels.txt").write_text("Anatomy::definitely present\n")
    (model / "config.json").write_text("{}")
    (model / "weights.th").write_bytes(b"\0")
    return model


def test_missing_model_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(RadGraphUnavailable) as err:
        RadGraphPackageExtractor(tmp_path / "radgraph-xl")
    message = str(err.value)
    for name in ("config.json", "weights.th", "vocabulary/"):
        assert name in message
    model = make_model_dir(tmp_path)
    (model / "weights.th").unlink()
    with pytest.raises(RadGraphUnavailable, match="weights.th") as err:
        RadGraphPackageExtractor(model)
    assert "config.json" not in str(err.value)
    other = make_model_dir(tmp_path, "my-model")
    with pytest.raises(RadGraphUnavailable, match="named after its model type"):
        RadGraphPackageExtractor(other)


def test_get_extractor_falls_back_to_builtin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONCORD_RADGRAPH_MODEL_DIR", raising=False)
    monkeypatch.delenv("CONCORD_RADGRAPH_PYTHON", raising=False)
    assert isinstance(get_extractor(), BuiltinExtractor)
    assert isinstance(get_extractor(tmp_path / "radgraph-xl"), BuiltinExtractor)
    model = make_model_dir(tmp_path)
    chosen = get_extractor(model, python=sys.executable)
    assert isinstance(chosen, RadGraphPackageExtractor) and chosen.name == "radgraph"
    monkeypatch.setenv("CONCORD_RADGRAPH_MODEL_DIR", str(model))
    assert isinstance(get_extractor(), RadGraphPackageExtractor)


FAKE_RADGRAPH = '''
import json, os, sys

class RadGraph:
    """Stands in for radgraph.RadGraph: checks the call, answers a canned graph."""

    def __init__(self, model_type=None, model_cache_dir=None, batch_size=1, **kwargs):
        assert model_type == "radgraph-xl", model_type
        assert os.path.isfile(os.path.join(model_cache_dir, model_type, "weights.th"))
        print("Using device: cpu")  # the real package prints this to stdout
        os.write(1, b"native noise on fd 1\\n")
        if os.environ.get("FAKE_RADGRAPH_FAIL"):
            raise RuntimeError("fake model failed to load")

    def __call__(self, hyps):
        offline = os.environ.get("HF_HUB_OFFLINE", "") + os.environ.get("TRANSFORMERS_OFFLINE", "")
        out = {}
        for i, text in enumerate(hyps):
            words = text.split()
            out[str(i)] = {
                "text": " ".join(words),
                "entities": {
                    "1": {"tokens": words[0], "label": "OBS-DA", "start_ix": 0, "end_ix": 0,
                          "relations": [["located_at", "2"]]},
                    "2": {"tokens": words[1], "label": "Anatomy::definitely present",
                          "start_ix": 1, "end_ix": 1, "relations": []},
                },
                "data_source": offline + ":" + str(len(hyps)),
                "data_split": "inference",
            }
        return out
'''


@pytest.fixture
def fake_radgraph(tmp_path: Path) -> Path:
    """A directory holding a fake ``radgraph`` package, for the child's PYTHONPATH."""
    pkg = tmp_path / "fake" / "radgraph"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_RADGRAPH))
    return pkg.parent


def test_subprocess_round_trip_with_a_fake_package(
    tmp_path: Path, fake_radgraph: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the child must be offline regardless
    monkeypatch.setenv("PYTHONPATH", str(fake_radgraph))
    model = make_model_dir(tmp_path)
    extractor = RadGraphPackageExtractor(model, python=sys.executable)
    graphs = extractor.extract([
        "FINDINGS: effusion pleural.\nIMPRESSION: no change.",
        "INDICATION: cough.",  # no clinical text: not sent, empty graph
        "pneumothorax apex",
    ])
    assert len(graphs) == 3
    first, empty, third = graphs
    assert first["text"] == "effusion pleural. no change."
    assert first["data_source"] == "11:2"  # offline env in the child; two reports sent
    assert first["entities"]["1"]["label"] == OBS_ABSENT
    assert first["entities"]["2"]["label"] == ANATOMY
    assert first["entities"]["1"]["relations"] == [["located_at", "2"]]
    assert empty["entities"] == {}
    assert third["entities"]["1"]["tokens"] == "pneumothorax"
    assert extractor.extract([]) == []


def test_subprocess_failure_is_reported(
    tmp_path: Path, fake_radgraph: Path
) -> None:
    model = make_model_dir(tmp_path)
    failing = RadGraphPackageExtractor(
        model, python=sys.executable,
        env={"PYTHONPATH": str(fake_radgraph), "FAKE_RADGRAPH_FAIL": "1"},
    )
    with pytest.raises(RadGraphError, match="fake model failed to load"):
        failing.extract(["effusion pleural"])
    missing = RadGraphPackageExtractor(model, python=sys.executable, env={"PYTHONPATH": ""})
    with pytest.raises(RadGraphError, match="no radgraph package"):
        missing.extract(["effusion pleural"])
    nowhere = RadGraphPackageExtractor(model, python=str(tmp_path / "no-such-python"))
    with pytest.raises(RadGraphUnavailable, match="interpreter"):
        nowhere.extract(["effusion pleural"])
