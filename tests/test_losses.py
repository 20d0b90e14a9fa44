"""Properties of the loss module (core_model.losses) and OFF-CLIP's sentence filter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core_model.losses import (
    VARIANTS,
    ConcordLoss,
    LossConfig,
    info_nce,
    kl_to_targets,
    off_diagonal_term,
    own_negative_mask,
    soft_targets,
    softclip_term,
    variant_spec,
)
from core_model.text.normal_filter import filter_normal_sentences, is_normal_sentence

B, D = 6, 16


def _unit(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1)


def _batch(batch: int = B, seed: int = 0, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """A random batch with every input any variant may need."""
    gen = torch.Generator().manual_seed(seed)
    x = {k: _unit(batch, D, gen=gen) for k in ("image", "text", "text_neg", "graph", "graph_neg")}
    x["clinical"] = F.normalize(torch.rand(batch, 14, generator=gen).round(), dim=-1)
    x["clinical_neg"] = F.normalize(torch.rand(batch, 14, generator=gen).round(), dim=-1)
    x["normal"] = torch.arange(batch) % 2 == 0
    x["logit_scale"] = torch.tensor(1 / 0.07)
    if requires_grad:
        for k in ("image", "text", "text_neg", "graph", "graph_neg", "logit_scale"):
            x[k] = x[k].clone().requires_grad_(True)
    return x


def _loss(variant: str, x: dict[str, torch.Tensor], **cfg: float):
    return ConcordLoss(LossConfig(variant=variant, **cfg))(**x)


# The ordered pairs of eq. 10 and the expected term names per variant.
PAIRS2 = ["(I,T)", "(T,I)"]
PAIRS6 = PAIRS2 + ["(I,G)", "(G,I)", "(T,G)", "(G,T)"]
EXPECTED_TERMS = {
    "clip": {f"L_nce{p}" for p in PAIRS2},
    "clip-dt": {f"L_t{p}" for p in PAIRS2},
    "clip-dtc": {f"L_{s}{p}" for s in "tc" for p in PAIRS2},
    "clip-n": {f"L_nce{p}" for p in PAIRS2},
    "clip-n-dtc": {f"L_{s}{p}" for s in "tc" for p in PAIRS2},
    "clip-g": {f"L_nce{p}" for p in PAIRS6},
    "clip-g-dtcg": {f"L_{s}{p}" for s in "tcg" for p in PAIRS6},
    "clip-ng-dtcg": {f"L_{s}{p}" for s in "tcg" for p in PAIRS6},
    "softclip": {f"L_nce{p}" for p in PAIRS2} | {f"L_soft{p}" for p in PAIRS2},
    "offclip": {f"L_nce{p}" for p in PAIRS2} | {f"L_off{p}" for p in PAIRS2},
}


# --------------------------------------------------------------------------- variants


def test_variant_table_is_complete() -> None:
    assert set(VARIANTS) == set(EXPECTED_TERMS)
    full = variant_spec("clip-ng-dtcg")
    assert full.hard_negatives and full.graph and full.soft_streams == {"t", "c", "g"}
    assert variant_spec("clip-n-dtc").soft_streams == {"t", "c"}
    assert not variant_spec("clip").hard_negatives and not variant_spec("clip").soft_streams
    assert variant_spec("softclip").softclip and variant_spec("offclip").offclip


def test_unknown_variant_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="clip-ng-dtcg") as err:
        variant_spec("clip-x")
    assert "offclip" in str(err.value)
    with pytest.raises(ValueError):
        LossConfig(variant="nope")


def test_bad_thresholds_rejected() -> None:
    with pytest.raises(ValueError, match="tau_t"):
        LossConfig(tau_t=1.0)
    with pytest.raises(ValueError, match="tau_c"):
        LossConfig(tau_c=-0.1)


@pytest.mark.parametrize("variant", list(EXPECTED_TERMS))
def test_each_variant_runs_finite_with_expected_terms(variant: str) -> None:
    out = _loss(variant, _batch())
    assert out.total.dim() == 0
    assert torch.isfinite(out.total)
    assert set(out.terms) == EXPECTED_TERMS[variant]
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.terms.values())


@pytest.mark.parametrize(
    ("variant", "missing"),
    [
        ("clip-n", "text_neg"),
        ("clip-dtc", "clinical"),
        ("clip-n-dtc", "clinical_neg"),
        ("clip-g", "graph"),
        ("clip-ng-dtcg", "graph_neg"),
        ("offclip", "normal"),
    ],
)
def test_missing_input_names_it(variant: str, missing: str) -> None:
    x = _batch()
    x[missing] = None  # type: ignore[assignment]
    with pytest.raises(ValueError, match=missing):
        _loss(variant, x)


def test_unused_inputs_may_be_none() -> None:
    x = _batch()
    out = ConcordLoss(LossConfig(variant="clip"))(
        image=x["image"], text=x["text"], logit_scale=x["logit_scale"]
    )
    assert torch.isfinite(out.total)


# --------------------------------------------------------------------------- soft targets


def test_soft_targets_threshold_and_rescale() -> None:
    sim = torch.tensor([[1.0, 0.9, 0.7], [0.9, 1.0, 0.85], [0.7, 0.85, 1.0]])
    y = soft_targets(sim, 0.8)
    # Pairs at or below the threshold get nothing (eqs. 4-5).
    assert y[0, 2] == 0 and y[2, 0] == 0
    # Above it, (S - tau) / (1 - tau), then the row is normalised: row 0 is (1, 0.5) / 1.5.
    assert torch.allclose(y[0], torch.tensor([1.0, 0.5, 0.0]) / 1.5)
    assert torch.allclose(y.sum(1), torch.ones(3))


def test_every_target_row_sums_to_one_and_empty_rows_fall_back_to_diagonal() -> None:
    gen = torch.Generator().manual_seed(1)
    sim = torch.rand(5, 10, generator=gen)
    sim[2] = 0.0  # nothing above any threshold -> one-hot diagonal
    y = soft_targets(sim, 0.5)
    assert torch.allclose(y.sum(1), torch.ones(5))
    assert torch.equal(y[2], F.one_hot(torch.tensor(2), 10).float())
    assert (y >= 0).all()


def test_own_hard_negative_gets_no_mass_even_above_threshold() -> None:
    # T2_i is almost T1_i (one entity negated): similarity far above tau.
    gen = torch.Generator().manual_seed(2)
    t1 = _unit(4, D, gen=gen)
    t2 = F.normalize(t1 + 0.05 * torch.randn(4, D, generator=gen), dim=-1)
    texts = torch.cat([t1, t2])
    sim = texts @ texts.T
    mask = own_negative_mask(4, 8)
    assert (sim[mask] > 0.9).all()
    y = soft_targets(sim, 0.8, mask)
    idx = torch.arange(4)
    assert (y[idx, idx + 4] == 0).all() and (y[idx + 4, idx] == 0).all()
    assert (y[idx, idx] > 0).all()
    unmasked = soft_targets(sim, 0.8)
    assert (unmasked[idx, idx + 4] > 0).all()  # the mask is what removes it


def test_own_hard_negative_gets_no_mass_inside_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through ConcordLoss: every target handed to the KL is zero at (i, B+i)."""
    import core_model.losses as losses

    seen: list[torch.Tensor] = []

    real = losses._kl_from_log_probs

    def spy(log_p: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen.append(targets)
        return real(log_p, targets)

    monkeypatch.setattr(losses, "_kl_from_log_probs", spy)
    x = _batch()
    x["text_neg"] = F.normalize(x["text"] + 0.01 * x["text_neg"], dim=-1)
    x["graph_neg"] = F.normalize(x["graph"] + 0.01 * x["graph_neg"], dim=-1)
    x["clinical_neg"] = x["clinical"].clone()  # identical labels: similarity 1
    _loss("clip-ng-dtcg", x)
    idx = torch.arange(B)
    wide = [t for t in seen if t.shape[1] == 2 * B]
    assert len(wide) == 3 * 4  # (I,T), (I,G), (T,G), (G,T) for t, c, g
    for t in wide:
        assert (t[idx, idx + B] == 0).all()
        assert torch.allclose(t.sum(1), torch.ones(t.shape[0]))


def test_kl_with_one_hot_targets_is_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 10, generator=gen)
    eye = torch.eye(5, 10)
    assert torch.allclose(kl_to_targets(logits, eye), info_nce(logits), atol=1e-6)


# --------------------------------------------------------------------------- equivalences


HIGH = {"tau_t": 0.999999, "tau_c": 0.999999, "tau_g": 0.999999}


@pytest.mark.parametrize(
    ("soft", "plain", "streams"),
    [
        ("clip-dt", "clip", 1),
        ("clip-dtc", "clip", 2),
        ("clip-n-dtc", "clip-n", 2),
        ("clip-g-dtcg", "clip-g", 3),
    ],
)
def test_identity_soft_labels_reproduce_infonce(soft: str, plain: str, streams: int) -> None:
    """Thresholds so high that only the diagonal survives: each stream equals InfoNCE."""
    x = _batch()
    out = _loss(soft, x, **HIGH)
    ref = _loss(plain, x)
    assert torch.allclose(out.total, streams * ref.total, atol=1e-6)
    for name, value in out.terms.items():
        assert torch.allclose(value, ref.terms["L_nce" + name[3:]], atol=1e-6)


def test_identity_soft_labels_reproduce_infonce_for_full_method() -> None:
    """Full method, diagonal-only labels: every term is InfoNCE of its direction's logits
    (I->X over the 2B candidates [X1; X2], X1->I over B, T<->G over 2B x 2B)."""
    x = _batch()
    out = _loss("clip-ng-dtcg", x, **HIGH)
    s = x["logit_scale"]
    img = x["image"]
    texts = torch.cat([x["text"], x["text_neg"]])
    graphs = torch.cat([x["graph"], x["graph_neg"]])
    logits = {
        "(I,T)": s * img @ texts.T,
        "(T,I)": s * x["text"] @ img.T,
        "(I,G)": s * img @ graphs.T,
        "(G,I)": s * x["graph"] @ img.T,
        "(T,G)": s * texts @ graphs.T,
        "(G,T)": s * graphs @ texts.T,
    }
    for pair, lg in logits.items():
        for stream in "tcg":
            assert torch.allclose(out.terms[f"L_{stream}{pair}"], info_nce(lg), atol=1e-6)
    assert torch.allclose(out.total, 3 * sum(info_nce(lg) for lg in logits.values()), atol=1e-5)


def test_hard_negative_infonce_matches_manual_equations() -> None:
    x = _batch()
    out = _loss("clip-n", x)
    s = x["logit_scale"]
    texts = torch.cat([x["text"], x["text_neg"]])
    i2t = s * x["image"] @ texts.T  # eq. 1 over 2B
    t2i = s * x["text"] @ x["image"].T  # eq. 2 over B
    assert i2t.shape == (B, 2 * B)
    manual = F.cross_entropy(i2t, torch.arange(B)) + F.cross_entropy(t2i, torch.arange(B))
    assert torch.allclose(out.total, manual, atol=1e-6)


def test_soft_labels_share_mass_between_near_duplicate_reports() -> None:
    """Two near-identical reports: their soft target splits mass, lowering the loss of the
    'confused' image compared with InfoNCE's one-hot target."""
    x = _batch()
    x["text"][1] = F.normalize(x["text"][0] + 0.01 * x["text"][1], dim=0)
    x["image"][0] = x["text"][1]  # image 0 looks like report 1, a near duplicate of report 0
    nce = _loss("clip", x).terms["L_nce(I,T)"]
    soft = _loss("clip-dt", x, tau_t=0.5).terms["L_t(I,T)"]
    assert soft < nce


# --------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("variant", list(EXPECTED_TERMS))
def test_aligned_embeddings_beat_shuffled(variant: str) -> None:
    gen = torch.Generator().manual_seed(4)
    base = _unit(B, D, gen=gen)
    x = _batch()
    x.update(image=base, text=base.clone(), graph=base.clone())
    x["text_neg"] = F.normalize(-base + 0.5 * _unit(B, D, gen=gen), dim=-1)
    x["graph_neg"] = x["text_neg"].clone()
    aligned = _loss(variant, x).total
    perm = torch.roll(torch.arange(B), 1)
    shuffled = dict(x, image=base[perm])
    assert aligned < _loss(variant, shuffled).total


def test_all_zero_clinical_vectors_give_no_nan() -> None:
    x = _batch(requires_grad=True)
    x["clinical"] = torch.zeros(B, 14)
    x["clinical_neg"] = torch.zeros(B, 14)
    for variant in ("clip-dtc", "clip-n-dtc", "clip-ng-dtcg"):
        out = _loss(variant, x)
        assert torch.isfinite(out.total)
        out.total.backward()
        assert all(torch.isfinite(x[k].grad).all() for k in ("image", "text"))
        # All-zero clinical rows fall back to the one-hot target: L_c equals InfoNCE.
        plain = _loss("clip-n" if "n" in variant.split("-")[1] else "clip", x)
        assert torch.allclose(out.terms["L_c(T,I)"], plain.terms["L_nce(T,I)"], atol=1e-6)
        for k in x:
            if isinstance(x[k], torch.Tensor) and x[k].grad is not None:
                x[k].grad = None


@pytest.mark.parametrize("variant", list(EXPECTED_TERMS))
def test_batch_size_one(variant: str) -> None:
    out = _loss(variant, _batch(batch=1))
    assert torch.isfinite(out.total)


# --------------------------------------------------------------------------- gradients

GRAD_INPUTS = {
    "clip": ("image", "text", "logit_scale"),
    "clip-dt": ("image", "text", "logit_scale"),
    "clip-dtc": ("image", "text", "logit_scale"),
    "clip-n": ("image", "text", "text_neg", "logit_scale"),
    "clip-n-dtc": ("image", "text", "text_neg", "logit_scale"),
    "clip-g": ("image", "text", "graph", "logit_scale"),
    "clip-g-dtcg": ("image", "text", "graph", "logit_scale"),
    "clip-ng-dtcg": ("image", "text", "text_neg", "graph", "graph_neg", "logit_scale"),
    "softclip": ("image", "text", "logit_scale"),
    "offclip": ("image", "text", "logit_scale"),
}


@pytest.mark.parametrize("variant", list(GRAD_INPUTS))
def test_gradients_reach_every_used_embedding(variant: str) -> None:
    x = _batch(requires_grad=True)
    _loss(variant, x).total.backward()
    for k in GRAD_INPUTS[variant]:
        g = x[k].grad
        assert g is not None, f"{variant}: no gradient for {k}"
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"{variant}: zero gradient for {k}"
    unused = {"image", "text", "text_neg", "graph", "graph_neg"} - set(GRAD_INPUTS[variant])
    for k in unused:
        assert x[k].grad is None, f"{variant} should not touch {k}"


def test_full_variant_graph_terms_reach_image_text_and_graph() -> None:
    """Each graph-modality term alone sends gradient into the embeddings it compares."""
    x = _batch(requires_grad=True)
    out = _loss("clip-ng-dtcg", x)
    expect = {
        "L_t(I,G)": ("image", "graph", "graph_neg"),
        "L_g(G,I)": ("image", "graph"),
        "L_c(T,G)": ("text", "text_neg", "graph", "graph_neg"),
        "L_t(G,T)": ("text", "text_neg", "graph", "graph_neg"),
    }
    for term, names in expect.items():
        grads = torch.autograd.grad(out.terms[term], [x[k] for k in names], retain_graph=True)
        for k, g in zip(names, grads, strict=True):
            assert g.abs().sum() > 0, f"{term} gives no gradient to {k}"


def test_soft_targets_are_detached() -> None:
    """Text similarity builds labels, not a path for gradients: L_t(T,I) of clip-dt has
    the same text gradient as a KL against the same targets computed by hand."""
    x = _batch(requires_grad=True)
    out = _loss("clip-dt", x, tau_t=0.0)
    (g,) = torch.autograd.grad(out.terms["L_t(T,I)"], [x["text"]])
    t = x["text"]
    targets = soft_targets((t @ t.T).detach(), 0.0)
    ref = kl_to_targets(x["logit_scale"] * t @ x["image"].T, targets)
    (g_ref,) = torch.autograd.grad(ref, [t])
    assert torch.allclose(g, g_ref, atol=1e-6)


# --------------------------------------------------------------------------- OFF-CLIP


def test_off_diagonal_term_zero_with_at_most_one_normal() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(B, B, generator=gen, requires_grad=True)
    for normal in (torch.zeros(B, dtype=torch.bool), F.one_hot(torch.tensor(3), B).bool()):
        term = off_diagonal_term(logits, normal)
        assert term == 0
        term.backward()  # still differentiable: the training loop needs no special case
    x = _batch()
    x["normal"] = torch.zeros(B, dtype=torch.bool)
    out = _loss("offclip", x)
    assert out.terms["L_off(I,T)"] == 0 and out.terms["L_off(T,I)"] == 0
    assert torch.allclose(out.total, _loss("clip", x).total)


def test_off_diagonal_term_pulls_normal_pairs_together() -> None:
    x = _batch(batch=8, seed=6)
    normal = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    image = x["image"].clone().requires_grad_(True)
    text = x["text"].clone().requires_grad_(True)

    def normal_cross_similarity(i: torch.Tensor, t: torch.Tensor) -> float:
        sim = F.normalize(i, dim=-1) @ F.normalize(t, dim=-1).T
        pair = normal[:, None] & normal[None, :] & ~torch.eye(8, dtype=torch.bool)
        return float(sim[pair].mean().detach())

    before = normal_cross_similarity(image, text)
    opt = torch.optim.SGD([image, text], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        i, t = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        logits = 10.0 * i @ t.T
        (off_diagonal_term(logits, normal) + off_diagonal_term(logits.T, normal)).backward()
        opt.step()
    assert normal_cross_similarity(image, text) > before + 0.05
    # The gradient of the term raises every normal-normal off-diagonal logit.
    logits = torch.zeros(8, 8, requires_grad=True)
    off_diagonal_term(logits, normal).backward()
    pair = normal[:, None] & normal[None, :] & ~torch.eye(8, dtype=torch.bool)
    assert (logits.grad[pair] < 0).all()
    assert (logits.grad.diagonal() == 0).all()  # never competes with InfoNCE's matched pair


def test_offclip_term_lower_when_normals_cluster() -> None:
    gen = torch.Generator().manual_seed(7)
    normal = torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool)
    shared = _unit(1, D, gen=gen)
    spread = _unit(B, D, gen=gen)
    clustered = spread.clone()
    clustered[normal] = F.normalize(shared + 0.1 * spread[normal], dim=-1)
    term = [off_diagonal_term(10.0 * e @ e.T, normal) for e in (spread, clustered)]
    assert term[1] < term[0]


# --------------------------------------------------------------------------- SoftCLIP


def test_softclip_term_is_kl_over_negatives() -> None:
    gen = torch.Generator().manual_seed(8)
    img, txt = _unit(B, D, gen=gen), _unit(B, D, gen=gen)
    logits = 10.0 * img @ txt.T
    # When the cross-modal negatives already follow the intra-modal softmax, the term is 0.
    self_sim = (logits * 0.1).clone()
    assert softclip_term(logits, self_sim, temperature=0.1) < 1e-6
    assert softclip_term(logits, img @ img.T, temperature=0.1) > 0
    assert softclip_term(logits[:1, :1], img[:1] @ img[:1].T, temperature=0.1) == 0


def test_softclip_total_is_infonce_plus_weighted_soft_terms() -> None:
    x = _batch()
    out = _loss("softclip", x, softclip_weight=0.5)
    ref = _loss("clip", x).total
    soft = out.terms["L_soft(I,T)"] + out.terms["L_soft(T,I)"]
    assert torch.allclose(out.total, ref + 0.5 * soft, atol=1e-6)
    assert math.isfinite(float(soft)) and soft > 0


# --------------------------------------------------------------------------- OFF-CLIP's text filter

ABNORMAL = [
    "There is a moderate right pleural effusion.",
    "The lungs are clear.",
    "Heart size is normal.",
    "No pneumothorax.",
    "No acute osseous abnormality.",
    "Right lower lobe opacity may reflect pneumonia.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "Comparison is made to the prior study.",
]


def test_filter_drops_normal_sentences_from_abnormal_report() -> None:
    kept = filter_normal_sentences(ABNORMAL, report_is_abnormal=True)
    assert kept == [
        "There is a moderate right pleural effusion.",
        "Right lower lobe opacity may reflect pneumonia.",
        "Endotracheal tube terminates 4 cm above the carina.",
        "Comparison is made to the prior study.",
    ]


def test_filter_leaves_normal_report_unchanged() -> None:
    normal = ["The lungs are clear.", "Heart size is normal.", "No pleural effusion."]
    out = filter_normal_sentences(normal, report_is_abnormal=False)
    assert out == normal and out is not normal


def test_filter_never_empties_an_abnormal_report() -> None:
    only_normal = ["The lungs are clear.", "No pleural effusion."]
    assert filter_normal_sentences(only_normal, report_is_abnormal=True) == only_normal


@pytest.mark.parametrize(
    "sentence",
    [
        "Heart is enlarged but there is no effusion.",  # mixed: keep
        "Osseous structures are not intact.",  # a normal word, negated: keep
        "Possible small left effusion.",  # uncertain: keep
        "Mild interstitial markings.",  # other abnormality: keep
        "No interval change.",  # temporal, not a normal statement: keep
    ],
)
def test_filter_keeps_sentences_that_are_not_purely_normal(sentence: str) -> None:
    assert not is_normal_sentence(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "No pleural effusion or pneumothorax.",
        "Mediastinal and hilar contours are unremarkable.",
        "Lungs are well expanded and clear.",
        "No acute cardiopulmonary process.",
        "The osseous structures are intact.",
    ],
)
def test_normal_statements_recognised(sentence: str) -> None:
    assert is_normal_sentence(sentence)
