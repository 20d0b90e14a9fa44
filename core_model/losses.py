"""Concord's contrastive losses, written next to the paper's equations.

The paper is "Bringing CLIP to the Clinic" (Ko and Park, CVPR 2025): section 4,
equations 1-10; the variants are named after its Table 2.
One module computes every variant, so the ablations differ only in which
ingredients they switch on (:func:`variant_spec`):

* ``hard_negatives`` (N): each batch holds B images, B reports T1 and their
  B negated reports T2 (and graphs G1, G2, clinical vectors C1, C2).
  Image->text softmax runs over the 2B texts [T1; T2] (eq. 1), text->image
  over the B images for T1 (eq. 2).
* ``soft_streams`` (D, a subset of {t, c, g}): the one-hot InfoNCE target is
  replaced by thresholded, rescaled, row-normalised intra-modal similarity of
  the text (eqs. 3-4), the clinical vectors (eqs. 3, 5) or the graphs
  (eqs. 8-9); each stream is its own KL term (eqs. 6-7) with weight w_T, w_C,
  w_G (eq. 10).
* ``graph`` (G): the graph embeddings are a third modality; the loss sums
  over the ordered modality pairs (I,T), (T,I), (I,G), (G,I), (T,G), (G,T)
  (eq. 10).
* ``softclip`` and ``offclip``: the two published baselines, InfoNCE plus
  their extra term (formulations in :func:`softclip_term` and
  :func:`off_diagonal_term`, and docs/losses.md).

Decisions the paper leaves implicit (docs/losses.md has the full list):

* **Report index space.**  Every soft label is indexed by *report*: row and
  column k of S = X X^T (eq. 3) stand for report k of [T1; T2] (or of T1
  without hard negatives).  Image i stands for report i, graph k for report
  k.  A direction's target is the block of the thresholded y whose rows are
  the anchors' reports and whose columns are the candidates' reports, masked
  and then row-normalised:

  ====================  =================  ============================
  direction             logits             target block of y (n = 2B or B)
  ====================  =================  ============================
  I -> T  (eq. 1)       I [T1;T2]^T  B x n  y[:B, :n]
  T -> I  (eq. 2)       T1 I^T       B x B  y[:B, :B]
  I -> G                I [G1;G2]^T  B x n  y[:B, :n]
  G -> I                G1 I^T       B x B  y[:B, :B]
  T -> G                T G^T        n x n  y[:n, :n]   (all 2B texts are anchors)
  G -> T                G T^T        n x n  y[:n, :n]
  ====================  =================  ============================

  Restricting then normalising equals the paper's "normalise, then take the
  block, then renormalise".  The positive of anchor row r is column r in
  every block, so the one-hot target is always the block's diagonal.
* **Own hard negative.**  Report i and its negation i+B differ by a single
  entity and are often more similar than the threshold; the pair (i, i+B)
  and (i+B, i) is masked to zero *before* normalising, so a sample's own hard
  negative never receives target mass.  Other samples' negations may (a
  negated abnormal report can genuinely match a normal one).
* **Fallback.**  A target row that is all zero after thresholding and masking
  (all-zero clinical vector; a threshold above every similarity) falls back
  to the one-hot diagonal, i.e. to InfoNCE for that anchor, never to NaN.
* **Detached targets.**  Soft targets are labels, computed without gradient:
  otherwise the encoders could lower the loss by reshaping their own
  intra-modal similarities instead of aligning modalities.  Clinical vectors
  are data and get no gradient.
* **Sum, not mean, over directions** (eq. 10): plain ``clip`` is L(I,T) +
  L(T,I), twice open_clip's averaged value.  T<->G terms average over their n
  anchors (eq. 6 averages over the anchors of its direction).
* ``logit_scale`` is 1/tau already (``exp`` of the learnable log-scale, as in
  open_clip); intra-modal similarities for soft labels are raw dot products.

With torch.distributed running, every input is gathered across ranks with
gradients first (:func:`core_model.distributed.gather_features`), so the loss
is the loss of the global batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core_model.distributed import gather_features

# --------------------------------------------------------------------------- variants


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """The ingredients of one loss variant (the paper's Table 2)."""

    name: str
    hard_negatives: bool = False
    soft_streams: frozenset[str] = frozenset()
    graph: bool = False
    softclip: bool = False
    offclip: bool = False

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the loss aligns: I and T, plus G for graph variants."""
        return ("I", "T", "G") if self.graph else ("I", "T")

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Ordered modality pairs (anchor, candidate) summed in eq. 10."""
        if self.graph:
            return (("I", "T"), ("T", "I"), ("I", "G"), ("G", "I"), ("T", "G"), ("G", "T"))
        return (("I", "T"), ("T", "I"))

    def required_inputs(self) -> tuple[str, ...]:
        """Keyword arguments of :meth:`ConcordLoss.forward` this variant cannot do without."""
        need = ["image", "text", "logit_scale"]
        if self.hard_negatives:
            need.append("text_neg")
        if self.graph or "g" in self.soft_streams:
            need.append("graph")
            if self.hard_negatives:
                need.append("graph_neg")
        if "c" in self.soft_streams:
            need.append("clinical")
            if self.hard_negatives:
                need.append("clinical_neg")
        if self.offclip:
            need.append("normal")
        return tuple(need)


def _spec(
    name: str,
    *,
    hard_negatives: bool = False,
    soft_streams: str = "",
    graph: bool = False,
    softclip: bool = False,
    offclip: bool = False,
) -> VariantSpec:
    return VariantSpec(name, hard_negatives, frozenset(soft_streams), graph, softclip, offclip)


#: Variant name -> ingredients, in the order of the paper's Table 2.
VARIANTS: Mapping[str, VariantSpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            _spec("clip"),
            _spec("clip-dt", soft_streams="t"),
            _spec("clip-dtc", soft_streams="tc"),
            _spec("clip-n", hard_negatives=True),
            _spec("clip-n-dtc", hard_negatives=True, soft_streams="tc"),
            _spec("clip-g", graph=True),
            _spec("clip-g-dtcg", graph=True, soft_streams="tcg"),
            _spec("clip-ng-dtcg", hard_negatives=True, graph=True, soft_streams="tcg"),
            _spec("softclip", softclip=True),
            _spec("offclip", offclip=True),
        )
    }
)


def variant_spec(name: str) -> VariantSpec:
    """The ingredients of variant ``name``; ValueError naming the valid ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(
            f"unknown loss variant {name!r}; valid variants: {', '.join(VARIANTS)}"
        ) from None


@dataclass(frozen=True)
class LossConfig:
    """Loss hyper-parameters.

    The paper publishes neither thresholds nor weights: they are config values
    chosen on validation data and recorded with each run.
    Thresholds must lie in [0, 1): at 1 eq. 4 divides by zero, and below 0 an
    all-zero clinical vector (similarity 0) would pass the threshold.
    """

    variant: str = "clip-ng-dtcg"
    tau_t: float = 0.8  #: text threshold, eq. 4
    tau_c: float = 0.5  #: clinical threshold, eq. 5
    tau_g: float = 0.8  #: graph threshold, eq. 9
    w_t: float = 1.0  #: w_T, eq. 10
    w_c: float = 1.0  #: w_C, eq. 10
    w_g: float = 1.0  #: w_G, eq. 10
    offclip_weight: float = 1.0  #: weight of OFF-CLIP's off-diagonal term
    softclip_weight: float = 1.0  #: weight of SoftCLIP's soft term
    softclip_temperature: float = 0.1  #: temperature of SoftCLIP's intra-modal softmax
    gather_distributed: bool = True  #: gather inputs over ranks (global-batch loss)

    def __post_init__(self) -> None:
        variant_spec(self.variant)
        for name in ("tau_t", "tau_c", "tau_g"):
            tau = getattr(self, name)
            if not 0.0 <= tau < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {tau}")
        for name in ("w_t", "w_c", "w_g", "offclip_weight", "softclip_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.softclip_temperature <= 0:
            raise ValueError(f"softclip_temperature must be > 0, got {self.softclip_temperature}")

    def tau(self, stream: str) -> float:
        """Threshold of soft-label stream ``stream`` ("t", "c" or "g")."""
        return {"t": self.tau_t, "c": self.tau_c, "g": self.tau_g}[stream]

    def weight(self, stream: str) -> float:
        """Weight of soft-label stream ``stream`` in eq. 10."""
        return {"t": self.w_t, "c": self.w_c, "g": self.w_g}[stream]


@dataclass
class LossOutput:
    """The total loss and its named, unweighted components (for logging)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------- building blocks


def info_nce(logits: Tensor) -> Tensor:
    """InfoNCE with the diagonal as positive: mean cross-entropy of row r against column r.

    With hard negatives the I->T logits are B x 2B; the positive of image i is
    still column i (T1_i), and T2_i is one more (hard) negative.
    """
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target)


def own_negative_mask(batch: int, n: int, device: torch.device | None = None) -> Tensor:
    """n x n bool mask of (i, i+B) and (i+B, i): a report and its own hard negative.

    ``n`` is 2B with hard negatives (then the mask is non-empty) and B without.
    """
    mask = torch.zeros(n, n, dtype=torch.bool, device=device)
    if n == 2 * batch:
        idx = torch.arange(batch, device=device)
        mask[idx, idx + batch] = True
        mask[idx + batch, idx] = True
    return mask


@torch.no_grad()
def threshold_similarity(sim: Tensor, tau: float) -> Tensor:
    """Eqs. 4, 5, 9: y = (S - tau) / (1 - tau) where S > tau, else 0 (no gradient: labels)."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {tau}")
    sim = sim.detach()
    return torch.where(sim > tau, (sim - tau) / (1.0 - tau), torch.zeros_like(sim))


@torch.no_grad()
def normalise_targets(y: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mask, fall back, row-normalise: thresholded y (a block of it) -> the targets y-hat.

    Entries where ``mask`` is True (a sample's own hard negative) are zeroed
    *before* normalising, so they never get target mass.  A row with nothing
    left falls back to the one-hot diagonal (InfoNCE for that anchor).
    """
    if mask is not None:
        y = y.masked_fill(mask, 0.0)  # own hard negative: never a positive
    row_sum = y.sum(dim=1, keepdim=True)
    diagonal = torch.eye(*y.shape, dtype=y.dtype, device=y.device)
    y = torch.where(row_sum > 0, y, diagonal)  # empty row -> one-hot fallback
    return y / y.sum(dim=1, keepdim=True)  # row-normalise: y -> y-hat


def soft_targets(sim: Tensor, tau: float, mask: Tensor | None = None) -> Tensor:
    """Dynamic soft labels from (a block of) an intra-modal similarity matrix.

    Eqs. 4, 5, 9 (:func:`threshold_similarity`), then masking, the one-hot
    fallback for empty rows and row normalisation (:func:`normalise_targets`):
    every row sums to 1.  Thresholding a whole matrix and normalising blocks
    of it gives the same targets as calling this on each block.
    """
    return normalise_targets(threshold_similarity(sim, tau), mask)


def kl_to_targets(logits: Tensor, targets: Tensor) -> Tensor:
    """Eqs. 6-7: (1/rows) sum_i KL(targets[i] || softmax(logits[i])).

    ``xlogy`` makes 0 log 0 = 0, so a one-hot target gives exactly the
    cross-entropy of InfoNCE.
    """
    return _kl_from_log_probs(F.log_softmax(logits, dim=1), targets)


def _kl_from_log_probs(log_p: Tensor, targets: Tensor) -> Tensor:
    """:func:`kl_to_targets` with the log-softmax already taken (shared by the streams)."""
    kl = (torch.xlogy(targets, targets) - targets * log_p).sum(dim=1)
    return kl.mean()


def _drop_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal entries of a square matrix, row by row: n x (n-1)."""
    n = m.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=m.device)
    return m[keep].view(n, n - 1)


def softclip_term(logits: Tensor, self_sim: Tensor, temperature: float) -> Tensor:
    """SoftCLIP's soft term for one direction (Gao et al., AAAI 2024), as implemented here.

    The target distribution of anchor i is the softmax of the anchor
    modality's self-similarity row, ``self_sim[i] / temperature`` (no
    threshold), detached.  Following SoftCLIP's "neg-KL" (the positive
    dominates the softened target, so the negatives are disentangled from
    it), the diagonal is dropped from *both* distributions, each renormalised
    over the B-1 negatives, and the term is the mean over anchors of
    KL(target_neg[i] || softmax(logits_neg[i])).  For I->T the targets come from
    image-image similarity, for T->I from text-text similarity.  Zero when B < 2.
    """
    n = logits.shape[0]
    if n < 2:
        return logits.sum() * 0.0
    with torch.no_grad():
        targets = F.softmax(_drop_diagonal(self_sim.detach()) / temperature, dim=1)
    return kl_to_targets(_drop_diagonal(logits), targets)


def off_diagonal_term(logits: Tensor, normal: Tensor) -> Tensor:
    """OFF-CLIP's off-diagonal term for one direction, as implemented here.

    OFF-CLIP's exact formula is unpublished; this is the formulation Concord
    uses.  Let N be the normal samples of the batch.  For each normal anchor
    i, take row i of the cross-modal logits *without its diagonal* and
    softmax it over the B-1 other candidates (p~); the positives are the other
    normal samples P_i = N \\ {i}.  The term is a supervised-contrastive
    ("L_out") loss over those off-diagonal entries:

        L_off = (1/|N|) sum_{i in N} -(1/|P_i|) sum_{j in P_i} log p~_ij

    Dropping the diagonal keeps the term from competing with InfoNCE's
    matched pair: it only re-ranks the *non-matching* candidates so that a
    normal image's other normal reports come before abnormal ones (and vice
    versa), which clusters normal studies.  It is 0 when the batch holds at
    most one normal sample (no off-diagonal normal pair), and minimal (not
    zero) when all samples are normal.
    """
    normal = normal.bool()
    n = logits.shape[0]
    if n < 2 or int(normal.sum()) < 2:
        return logits.sum() * 0.0
    log_p = F.log_softmax(_drop_diagonal(logits), dim=1)
    positives = _drop_diagonal(normal[:, None] & normal[None, :]).to(log_p.dtype)
    per_anchor = -(positives * log_p).sum(dim=1) / positives.sum(dim=1).clamp(min=1.0)
    return per_anchor[normal].mean()


# --------------------------------------------------------------------------- the loss


@dataclass
class _Direction:
    """One ordered modality pair: its logits and the report indices of rows and columns."""

    anchor: str
    candidate: str
    logits: Tensor
    rows: int  # anchors are reports 0..rows-1
    cols: int  # candidates are reports 0..cols-1

    @property
    def label(self) -> str:
        return f"({self.anchor},{self.candidate})"


class ConcordLoss(nn.Module):
    """All Concord loss variants; see the module docstring for the equations and decisions."""

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        self.spec = variant_spec(self.config.variant)

    def forward(
        self,
        *,
        image: Tensor,
        text: Tensor,
        logit_scale: Tensor | float,
        text_neg: Tensor | None = None,
        clinical: Tensor | None = None,
        clinical_neg: Tensor | None = None,
        graph: Tensor | None = None,
        graph_neg: Tensor | None = None,
        normal: Tensor | None = None,
    ) -> LossOutput:
        """Compute the loss of the (global) batch.

        ``image``, ``text`` (T1), ``text_neg`` (T2), ``graph`` (G1), ``graph_neg``
        (G2): L2-normalised B x D embeddings.  ``clinical`` / ``clinical_neg``:
        L2-normalised B x 14 clinical vectors (all-zero rows allowed).
        ``normal``: bool (B,) mask of normal studies.  ``logit_scale``: 1/tau.
        Inputs the variant does not use may be None (and are ignored).
        """
        spec, cfg = self.spec, self.config
        inputs: dict[str, Tensor | None] = {
            "image": image,
            "text": text,
            "text_neg": text_neg,
            "clinical": clinical,
            "clinical_neg": clinical_neg,
            "graph": graph,
            "graph_neg": graph_neg,
            "normal": normal,
        }
        self._check(inputs, logit_scale)
        used = [k for k in inputs if k in spec.required_inputs()]
        if cfg.gather_distributed:
            inputs.update(zip(used, gather_features(*(inputs[k] for k in used)), strict=True))
        x = {k: inputs[k] for k in used}
        scale = torch.as_tensor(logit_scale, dtype=image.dtype, device=image.device)

        batch = x["image"].shape[0]
        # The report index space: [T1; T2] with hard negatives (n = 2B), T1 without (n = B).
        texts = _stack(x["text"], x.get("text_neg"), spec.hard_negatives)
        assert texts is not None
        graphs = _stack(x.get("graph"), x.get("graph_neg"), spec.hard_negatives)
        n = texts.shape[0]

        directions = self._directions(x["image"], texts, graphs, scale, batch)
        terms: dict[str, Tensor] = {}
        weights: dict[str, float] = {}

        if spec.soft_streams:
            clinicals = _stack(x.get("clinical"), x.get("clinical_neg"), spec.hard_negatives)
            streams = {"t": texts, "c": clinicals, "g": graphs}
            mask = own_negative_mask(batch, n, device=texts.device)
            y = {}
            for s in sorted(spec.soft_streams, key="tcg".index):
                emb = streams[s].detach()
                # eq. 3 (S_t, S_c) and eq. 8 (S_g), report x report, thresholded (eqs. 4, 5, 9)
                y[s] = threshold_similarity(emb @ emb.T, cfg.tau(s))
            for d in directions:
                log_p = F.log_softmax(d.logits, dim=1)  # eqs. 1-2 (and their graph analogues)
                for s, ys in y.items():
                    targets = normalise_targets(ys[: d.rows, : d.cols], mask[: d.rows, : d.cols])
                    name = f"L_{s}{d.label}"
                    terms[name] = _kl_from_log_probs(log_p, targets)  # eqs. 6-7
                    weights[name] = cfg.weight(s)
        else:
            for d in directions:
                name = f"L_nce{d.label}"
                terms[name] = info_nce(d.logits)
                weights[name] = 1.0

        if spec.softclip:
            i_t, t_i = directions[0], directions[1]
            img, txt = x["image"], x["text"]
            for d, own in ((i_t, img), (t_i, txt)):
                name = f"L_soft{d.label}"
                terms[name] = softclip_term(d.logits, own @ own.T, cfg.softclip_temperature)
                weights[name] = cfg.softclip_weight

        if spec.offclip:
            for d in directions[:2]:
                name = f"L_off{d.label}"
                terms[name] = off_diagonal_term(d.logits, x["normal"])
                weights[name] = cfg.offclip_weight

        total = sum(weights[k] * v for k, v in terms.items())  # eq. 10
        assert isinstance(total, Tensor)
        return LossOutput(total=total, terms=terms)

    def _directions(
        self, image: Tensor, texts: Tensor, graphs: Tensor | None, scale: Tensor, batch: int
    ) -> list[_Direction]:
        """Logits of every ordered modality pair (eq. 10), anchors x candidates."""
        n = texts.shape[0]
        # Each reverse direction is a transpose of its forward one (one matmul per pair,
        # as open_clip's logits_per_text = logits_per_image.T).
        i_t = scale * image @ texts.T  # eq. 1: image i over the n texts [T1; T2]
        out = [
            _Direction("I", "T", i_t, batch, n),
            _Direction("T", "I", i_t[:, :batch].T, batch, batch),  # eq. 2: T1 over B images
        ]
        if self.spec.graph:
            assert graphs is not None
            i_g = scale * image @ graphs.T  # as eq. 1, with G = [G1; G2]
            t_g = scale * texts @ graphs.T  # all n texts against all n graphs
            out += [
                _Direction("I", "G", i_g, batch, n),
                _Direction("G", "I", i_g[:, :batch].T, batch, batch),  # as eq. 2, with G1
                _Direction("T", "G", t_g, n, n),
                _Direction("G", "T", t_g.T, n, n),
            ]
        return out

    def _check(self, inputs: dict[str, Tensor | None], logit_scale: Tensor | float) -> None:
        """Clear ValueErrors for missing or mis-shaped inputs, naming them."""
        spec = self.spec
        if logit_scale is None:
            raise ValueError(f"loss variant {spec.name!r} needs logit_scale; got None")
        missing = [k for k in spec.required_inputs() if k != "logit_scale" and inputs[k] is None]
        if missing:
            raise ValueError(f"loss variant {spec.name!r} needs {', '.join(missing)}; got None")
        image = inputs["image"]
        assert image is not None
        if image.dim() != 2:
            raise ValueError(f"image must be B x D, got shape {tuple(image.shape)}")
        batch = image.shape[0]
        for k in spec.required_inputs():
            t = inputs.get(k)
            if t is None or not isinstance(t, Tensor):
                continue
            want_dim = 1 if k == "normal" else 2
            if t.dim() != want_dim or t.shape[0] != batch:
                raise ValueError(
                    f"{k} must have {'B' if want_dim == 1 else 'B x D'} shape with B = {batch}, "
                    f"got {tuple(t.shape)}"
                )
        for a, b in (
            ("text", "image"),
            ("text_neg", "text"),
            ("graph", "text"),
            ("graph_neg", "graph"),
            ("clinical_neg", "clinical"),
        ):
            ta, tb = inputs.get(a), inputs.get(b)
            if (
                a in spec.required_inputs()
                and ta is not None
                and tb is not None
                and ta.shape[1] != tb.shape[1]
            ):
                raise ValueError(f"{a} has dimension {ta.shape[1]} but {b} has {tb.shape[1]}")


def _stack(first: Tensor | None, negatives: Tensor | None, hard_negatives: bool) -> Tensor | None:
    """[X1; X2] with hard negatives, X1 without (the paper's T, C, G of eqs. 3 and 8)."""
    if first is None:
        return None
    if hard_negatives:
        assert negatives is not None
        return torch.cat([first, negatives], dim=0)
    return first
