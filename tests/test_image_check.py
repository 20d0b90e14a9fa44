"""The image check: a model reads only images like its own training images, and says why not.

Header rules (modality, body part, secondary capture, frames, colour), picture rules
(blank, saturated, too small, colour photographs), and the fitted description of the
model's training images (Mahalanobis distance with a Ledoit-Wolf covariance), stored in
the checkpoint and checked on load; the check's contract in ``concord check --json``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from app.cli import main as concord
from core_model.checkpoint import CheckpointError
from core_model.image_check import (
    IMAGE_CHECK_FILE,
    IMAGE_CHECK_TENSORS,
    ImageCheckError,
    colour_problem,
    fit_description,
    header_problem,
    ledoit_wolf,
    load_description,
    picture_problem,
    save_description,
)
from core_model.inference import Reader
from training.dataset import MimicDataset
from training.image_check import accept_rate, fit_from_dataset, read_frontal

NORMAL = "FINDINGS: No pleural effusion. No pneumothorax. The heart is normal in size."


# ----------------------------------------------------------------------------- the rules


def dicom(**values) -> pydicom.Dataset:
    """A header as read from a file: values stay raw until they are used, as pydicom reads them
    (so a malformed one, like a corrupt file's, fails only when read)."""
    ds = pydicom.Dataset()
    base = {"Modality": "DX", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1",
            "BodyPartExamined": "CHEST", "PhotometricInterpretation": "MONOCHROME2", **values}
    for keyword, value in base.items():
        tag = Tag(keyword)
        vr = dictionary_VR(tag)
        raw = value.encode() + (b" " if len(value) % 2 else b"")
        ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, True, True)
    return ds


@pytest.mark.parametrize("values, reason", [
    ({"Modality": "CT"}, "modality CT (computed tomography) is not a radiograph"),
    ({"Modality": "MR"}, "modality MR"),
    ({"Modality": "US"}, "modality US"),
    ({"Modality": "NM"}, "modality NM"),
    ({"Modality": "PT"}, "modality PT"),
    ({"Modality": "SEG"}, "modality SEG"),
    ({"Modality": "SC"}, "modality SC (secondary capture: a screenshot"),
    ({"Modality": "OT"}, "modality OT"),
    ({"BodyPartExamined": "ABDOMEN"}, "body part examined is ABDOMEN, not the chest"),
    ({"BodyPartExamined": "SKULL"}, "SKULL"),
    ({"NumberOfFrames": "12"}, "multi-frame"),
    ({"NumberOfFrames": "1x"}, "NumberOfFrames '1x' is not a number"),
    ({"PhotometricInterpretation": "RGB"}, "colour image (RGB)"),
])
def test_headers_of_other_images_are_refused_with_a_reason(values, reason):
    assert reason in header_problem(dicom(**values))


@pytest.mark.parametrize("values", [{}, {"Modality": "CR"}, {"BodyPartExamined": "THORAX"},
                                    {"BodyPartExamined": ""}, {"NumberOfFrames": "1"},
                                    {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}])
def test_chest_radiograph_headers_pass(values):
    assert header_problem(dicom(**values)) is None


def test_pictures_that_cannot_be_read_are_refused():
    rng = np.random.default_rng(0)
    fine = rng.random((300, 280)).astype(np.float32)
    assert picture_problem(fine, min_side=128) is None
    assert "blank" in picture_problem(np.full((300, 300), 0.5, np.float32), min_side=128)
    saturated = np.ones((300, 300), np.float32)
    saturated[:10] = rng.random((10, 300))
    assert "saturated" in picture_problem(saturated, min_side=128)
    assert "32 x 40 pixels, smaller than the 128" in picture_problem(fine[:40, :32], min_side=128)


def test_colour_photographs_are_told_from_grayscale_pictures(tmp_path):
    rng = np.random.default_rng(1)
    gray = (rng.random((96, 96)) * 255).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "gray-as-rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    photo = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    assert colour_problem(tmp_path / "gray-as-rgb.png") is None
    assert colour_problem(tmp_path / "gray.png") is None
    assert "colour picture" in colour_problem(tmp_path / "photo.jpg")


# ----------------------------------------------------------------------------- the description


def test_the_description_accepts_its_own_distribution_and_refuses_another():
    rng = np.random.default_rng(0)
    scale = np.linspace(0.2, 3.0, 64)
    train = rng.normal(size=(400, 64)) * scale
    held = rng.normal(size=(400, 64)) * scale
    # two stages: the second sees the same images through another (texture-like) lens
    texture = rng.normal(size=(400, 16))
    description = fit_description([train, texture], [held, rng.normal(size=(400, 16))],
                                  percentile=99.0)
    fresh = [rng.normal(size=(1000, 64)) * scale, rng.normal(size=(1000, 16))]
    assert np.mean(description.scores(fresh) <= description.threshold) > 0.97
    shifted = [fresh[0] + 3.0, fresh[1]]  # other content
    assert np.mean(description.scores(shifted) <= description.threshold) < 0.05
    other_kind = [fresh[0], fresh[1] * 3.0]  # the same content, another kind of picture
    assert np.mean(description.scores(other_kind) <= description.threshold) < 0.05
    verdict = description.verdict([s[:2] for s in shifted], model="model m")
    assert not verdict.accepted and "unlike the images model m was trained on" in verdict.reason
    assert description.verdict([f[:1] for f in fresh]).accepted
    with pytest.raises(ImageCheckError, match="dimensions"):
        description.scores([np.zeros((1, 10)), np.zeros((1, 16))])
    with pytest.raises(ImageCheckError, match="stages"):
        description.scores([np.zeros((1, 64))])
    with pytest.raises(ImageCheckError, match="too few"):
        fit_description([train[:5]], [held])


def test_ledoit_wolf_is_well_conditioned_with_fewer_images_than_dimensions():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 100))
    covariance = ledoit_wolf(x - x.mean(0))
    assert np.all(np.linalg.eigvalsh(covariance) > 0)
    np.testing.assert_allclose(covariance, covariance.T)


def test_a_saved_description_round_trips_and_a_damaged_one_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(3)
    description = fit_description([rng.normal(size=(50, 8)), rng.normal(size=(50, 4))],
                                  [rng.normal(size=(50, 8)), rng.normal(size=(50, 4))],
                                  provenance={"fitted_on": "test"})
    assert load_description(tmp_path) is None  # never fitted
    save_description(tmp_path, description)
    loaded = load_description(tmp_path)
    assert loaded.threshold == pytest.approx(description.threshold)
    assert len(loaded.layers) == 2
    np.testing.assert_allclose(loaded.layers[1].mean, description.layers[1].mean, rtol=1e-6)
    assert loaded.provenance["fitted_on"] == "test"
    tensors = tmp_path / IMAGE_CHECK_TENSORS
    data = bytearray(tensors.read_bytes())
    data[-5] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(ImageCheckError, match="does not match"):
        load_description(tmp_path)
    tensors.unlink()
    with pytest.raises(ImageCheckError, match="incomplete"):
        load_description(tmp_path)
    (tmp_path / IMAGE_CHECK_FILE).write_text("{not json")
    save_description(tmp_path, description)
    (tmp_path / IMAGE_CHECK_FILE).write_text("{not json")
    with pytest.raises(ImageCheckError, match="cannot be read"):
        load_description(tmp_path)


# ----------------------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def checked_model(trained, tmp_path_factory):
    """The shared tiny model, copied, with an image check fitted on its world."""
    target = tmp_path_factory.mktemp("checked") / "model"
    shutil.copytree(trained["dir"], target)
    reader = Reader(target)
    save_description(target, fit_from_dataset(reader.model, trained["root"], seed=0))
    return target


def test_a_model_accepts_its_own_images_and_refuses_real_films_ct_and_junk(
        checked_model, trained, shared_data, tmp_path):
    reader = Reader(checked_model)
    assert reader.image_description is not None
    rate = accept_rate(reader, read_frontal(trained["root"], "test"))
    assert rate is not None and rate >= 0.9
    own = MimicDataset(trained["root"], split="test")[0]
    result = reader.check([own.image_path], NORMAL)
    assert result.image_check.accepted and result.image_check.score <= result.image_check.threshold

    for film in ("00000001_000.png", "00027426_000.png", "cr_chest_pa_monochrome2.dcm",
                 "cr_chest_pa_monochrome1.dcm"):
        refused = reader.check([shared_data / "cxr-images" / film], NORMAL)
        assert not refused.image_check.accepted, film
        assert refused.flags == [] and "unlike the images" in " ".join(refused.warnings)
        anyway = reader.check([shared_data / "cxr-images" / film], NORMAL, show_unreliable=True)
        assert all(f.unreliable and f.message.startswith("Unreliable") for f in anyway.flags)

    ct = reader.check([get_testdata_file("CT_small.dcm")], NORMAL, show_unreliable=True)
    assert (ct.image_check.accepted, ct.flags, ct.image_check.score) == (False, [], None)
    assert "modality CT (computed tomography) is not a radiograph" in ct.image_check.reason
    mr = reader.check([get_testdata_file("MR_small.dcm")], NORMAL)
    assert "modality MR" in mr.image_check.reason and mr.flags == []
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((512, 512), 128, np.uint8)).save(blank)
    assert "blank" in reader.check([blank], NORMAL).image_check.reason
    tiny = tmp_path / "tiny.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(tiny)
    assert "smaller than the 128" in reader.check([tiny], NORMAL).image_check.reason


def test_a_model_without_an_image_check_loads_with_a_warning(trained):
    result = Reader(trained["dir"]).check(
        [MimicDataset(trained["root"], split="test")[0].image_path], NORMAL)
    assert result.image_check.accepted and result.image_check.score is None
    assert any("no image check was fitted" in w for w in result.warnings)


def test_a_damaged_image_check_stops_loading_with_a_clear_error(checked_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(checked_model, broken)
    (broken / IMAGE_CHECK_TENSORS).write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="does not match"):
        Reader(broken)
    report = tmp_path / "r.txt"
    report.write_text(NORMAL)
    code = concord(["check", "--model", str(broken), "--image", str(report), "--report",
                    str(report)])
    assert code == 2


def test_check_json_carries_the_image_check(checked_model, trained, shared_data, tmp_path, capsys):
    report = tmp_path / "r.txt"
    report.write_text(NORMAL)
    own = MimicDataset(trained["root"], split="test")[0].image_path
    film = shared_data / "cxr-images" / "00000001_000.png"
    for image, accepted in ((own, True), (film, False)):
        assert concord(["check", "--model", str(checked_model), "--image", str(image),
                        "--report", str(report), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        check = out["image_check"]
        assert set(check) == {"accepted", "reason", "score", "threshold"}
        assert check["accepted"] is accepted and isinstance(check["score"], float)
        if not accepted:
            assert out["flags"] == [] and check["reason"] in " ".join(out["warnings"])
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(json.dumps({"id": n, "images": [str(i)], "report": NORMAL})
                               for n, i in (("own", own), ("film", film),
                                            ("ct", get_testdata_file("CT_small.dcm")))) + "\n")
    out_file = tmp_path / "out.jsonl"
    assert concord(["check", "--model", str(checked_model), "--batch", str(cases), "-o",
                    str(out_file)]) == 0
    lines = {r["id"]: r for r in map(json.loads, out_file.read_text().splitlines())}
    assert [lines[k]["image_check"]["accepted"] for k in ("own", "film", "ct")] == [
        True, False, False]
    assert lines["ct"]["flags"] == [] and lines["ct"]["image_check"]["score"] is None
