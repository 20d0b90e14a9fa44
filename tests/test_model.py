"""The CLIP model: configs, encoders, tokenizer, preprocessing, local weights, gradients."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from core_model.model import (
    IMAGE_MEAN,
    IMAGE_STD,
    ConcordTokenizer,
    ModelConfig,
    WeightsError,
    create_model,
    get_config,
    letterbox,
    list_configs,
    preprocess,
    preprocess_batch,
    register_config,
    train_wordpiece,
)
from core_model.model.encoders import ImageEncoder
from core_model.text.graph import empty_graph, extract_graph

CORPUS = [
    "FINDINGS: Small left pleural effusion. No pneumothorax. IMPRESSION: Mild cardiomegaly.",
    "No focal consolidation, pleural effusion or pneumothorax.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "The endotracheal tube terminates 4 cm above the carina.",
    "Dr. ___ was notified of the findings by ___ at ___.",
    "Moderate pulmonary edema with bilateral pleural effusions.",
    "Heart size is normal. Lungs are clear.",
    "Left basilar atelectasis. No acute fracture.",
] * 4

SENTENCES = [
    "No pleural effusion.",
    "Small left pleural effusion.",
    "Mild cardiomegaly without pulmonary edema.",
    "Right lower lobe consolidation concerning for pneumonia.",
]


@pytest.fixture(scope="module")
def tokenizer() -> ConcordTokenizer:
    return train_wordpiece(CORPUS, vocab_size=400, min_frequency=1)


@pytest.fixture(scope="module")
def model(tokenizer: ConcordTokenizer):
    torch.manual_seed(0)
    return create_model("tiny", tokenizer=tokenizer).eval()


def _image(h: int = 160, w: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w), dtype=np.float32)


# --------------------------------------------------------------------------- configs


def test_registry_has_tiny_and_paper() -> None:
    assert {"tiny", "paper"} <= set(list_configs())
    paper = get_config("paper")
    assert paper.image.backbone == "swin_tiny_patch4_window7_224"
    assert paper.image.image_size == 224
    assert (paper.text.hidden_size, paper.text.num_layers, paper.text.num_heads) == (768, 12, 12)
    assert paper.graph.num_layers == 2 and paper.embed_dim == 512
    tiny = get_config("tiny")
    assert tiny.image.image_size == 128 and 128 <= tiny.text.hidden_size <= 256
    assert 2 <= tiny.text.num_layers <= 4 and 128 <= tiny.embed_dim <= 256


def test_get_config_returns_a_copy() -> None:
    cfg = get_config("tiny")
    cfg.embed_dim = 7
    cfg.image.timm_kwargs["channels"].append(512)
    assert get_config("tiny").embed_dim != 7
    assert get_config("tiny").image.timm_kwargs["channels"] == [32, 64, 128, 256]


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = get_config("tiny")
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert ModelConfig.from_json(tmp_path / "c.json") == cfg
    assert ModelConfig.from_json(str(tmp_path / "c.json")) == cfg
    json.loads(cfg.to_json())  # plain JSON


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.update(embed_dimm=3), "embed_dimm"),
        (lambda d: d["text"].update(hiden_size=3), "text.hiden_size"),
        (lambda d: d["image"].update(size=3), "image.size"),
    ],
)
def test_unknown_config_key_is_named(edit, key: str) -> None:
    data = get_config("tiny").to_dict()
    edit(data)
    with pytest.raises(ValueError, match=f"unknown key '{key}'"):
        ModelConfig.from_json(json.dumps(data))


def test_register_config() -> None:
    cfg = get_config("tiny")
    cfg.embed_dim = 144
    register_config("tiny-test-144", cfg)
    assert get_config("tiny-test-144").embed_dim == 144
    assert get_config("tiny-test-144").name == "tiny-test-144"
    with pytest.raises(ValueError, match="already registered"):
        register_config("tiny-test-144", cfg)
    with pytest.raises(ValueError, match="unknown model config 'nope'"):
        get_config("nope")


def test_tiny_model_is_small(model) -> None:
    n = sum(p.numel() for p in model.parameters())
    assert n * 4 < 15e6  # float32 bytes


def test_paper_image_encoder_grid() -> None:
    # Only the Swin (28 M parameters); the BERT-base text tower is too slow to build here.
    enc = ImageEncoder(get_config("paper").image).eval()
    with torch.inference_mode():
        pooled, tokens, grid = enc.forward_tokens(torch.zeros(1, 3, 224, 224))
    assert grid == (7, 7) and tokens.shape == (1, 49, 768) and pooled.shape == (1, 768)
    torch.testing.assert_close(pooled, tokens.mean(1), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- encoders


def test_encode_image_shapes_and_norm(model) -> None:
    px = preprocess_batch([_image(), _image(seed=1)], 128)
    with torch.inference_mode():
        emb = model.encode_image(px)
        glob, tokens, grid = model.encode_image_tokens(px)
    assert emb.shape == (2, model.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(glob, emb)
    assert grid == (8, 8) and tokens.shape == (2, 64, model.embed_dim)
    torch.testing.assert_close(tokens.norm(dim=-1), torch.ones(2, 64))


def test_global_is_mean_of_patch_tokens(model) -> None:
    # The heatmap contract: the global feature is the mean of the patch features.
    px = model.preprocess(_image())[None]
    with torch.inference_mode():
        pooled, tokens, _ = model.visual.forward_tokens(px)
    torch.testing.assert_close(pooled, tokens.mean(1), atol=1e-5, rtol=1e-5)


def test_encode_image_rejects_wrong_shape(model) -> None:
    with pytest.raises(ValueError, match=r"expected pixels \[B, 3, 128, 128\]"):
        model.encode_image(torch.zeros(1, 1, 128, 128))


def test_encode_text_shapes_norm_and_padding(model) -> None:
    with torch.inference_mode():
        emb = model.encode_texts(SENTENCES)
        alone = model.encode_texts(SENTENCES[:1])
    assert emb.shape == (4, model.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    # Padding must not change a sentence's embedding (masked pooling and attention).
    torch.testing.assert_close(alone[0], emb[0], atol=1e-5, rtol=1e-5)


def test_cls_pooling(tokenizer) -> None:
    cfg = get_config("tiny")
    cfg.text.pooling = "cls"
    m = create_model(cfg, tokenizer=tokenizer).eval()
    with torch.inference_mode():
        assert m.encode_texts(SENTENCES).shape == (4, cfg.embed_dim)
    cfg.text.pooling = "max"
    with pytest.raises(ValueError, match="pooling"):
        create_model(cfg, tokenizer=tokenizer)


def test_encode_graphs(model) -> None:
    graphs = [
        extract_graph("FINDINGS: Small left pleural effusion. No pneumothorax."),
        extract_graph("FINDINGS: No pleural effusion."),
        extract_graph("FINDINGS: Pleural effusion."),
        empty_graph(),
    ]
    assert graphs[1]["entities"] and not graphs[3]["entities"]
    with torch.inference_mode():
        emb = model.encode_graphs(graphs)
        only_empty = model.encode_graphs([empty_graph()])
        none = model.encode_graphs([])
    assert emb.shape == (4, model.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(only_empty[0], emb[3], atol=1e-5, rtol=1e-5)
    assert none.shape == (0, model.embed_dim)
    # Same words, opposite assertion: the node label embedding tells them apart.
    assert not torch.allclose(emb[1], emb[2])


def test_model_without_tokenizer_says_so() -> None:
    m = create_model("tiny")
    with pytest.raises(RuntimeError, match="no tokenizer"):
        m.tokenize(["x"])
    ids = torch.tensor([[2, 10, 3]])
    assert m.encode_text(ids, torch.ones_like(ids)).shape == (1, m.embed_dim)


def test_logit_scale() -> None:
    m = create_model("tiny")
    assert math.isclose(m.logit_scale_exp().item(), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert m.logit_scale_exp().item() == pytest.approx(100.0)
    m.clamp_logit_scale_()
    assert m.logit_scale.item() == pytest.approx(math.log(100))


def test_gradients_reach_every_encoder(tokenizer) -> None:
    torch.manual_seed(0)
    m = create_model("tiny", tokenizer=tokenizer).train()
    px = preprocess_batch([_image(seed=i) for i in range(3)], 128)
    ids, mask = m.tokenize(SENTENCES[:3])
    graphs = [extract_graph(f"FINDINGS: {s}") for s in SENTENCES[:3]]
    out = m(px, ids, mask, graphs)
    scale = out["logit_scale"]
    target = torch.arange(3)

    def clip_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = scale * a @ b.T
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    loss = clip_loss(out["image_features"], out["text_features"]) + clip_loss(
        out["image_features"], out["graph_features"]
    )
    loss.backward()
    named = dict(m.named_parameters())
    for name in (
        "visual.trunk.conv1.weight",
        "visual.trunk.layer4.1.bn2.weight",  # zero-initialised residual gate
        "text.bert.encoder.layer.0.attention.self.query.weight",
        "text.bert.embeddings.word_embeddings.weight",
        "graph.convs.0.lin.weight",
        "graph.convs.1.lin.weight",
        "graph.label_embedding.weight",
        "image_proj.weight",
        "text_proj.weight",
        "graph_proj.weight",
        "logit_scale",
    ):
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_graph_loss_alone_reaches_word_embeddings(tokenizer) -> None:
    m = create_model("tiny", tokenizer=tokenizer)
    emb = m.encode_graphs([extract_graph("FINDINGS: Small left pleural effusion.")])
    emb.sum().backward()
    grad = m.text.word_embeddings.weight.grad
    assert grad is not None
    assert grad[tokenizer.token_to_id("effusion")].abs().sum() > 0


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_training_and_specials(tokenizer: ConcordTokenizer) -> None:
    for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]):
        assert tokenizer.token_to_id(tok) == i
    pieces = tokenizer.tokens("Dr. ___ notified. NO Pleural Effusion")
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert "___" in pieces and "_" not in pieces
    assert "effusion" in pieces  # lowercased
    assert tokenizer.decode(tokenizer.backend.encode("no pleural effusion").ids) == (
        "no pleural effusion"
    )


def test_encode_batch_pads_and_truncates(tokenizer: ConcordTokenizer) -> None:
    ids, mask = tokenizer.encode_batch(["no effusion", CORPUS[0]], max_length=8)
    assert ids.dtype == torch.long and mask.dtype == torch.long and ids.shape == (2, 8)
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert ids[0, 4:].eq(tokenizer.pad_id).all()
    assert ids[1, -1] == tokenizer.sep_id and mask[1].all()
    ids, _ = tokenizer.encode_batch(["no effusion"], max_length=64)
    assert ids.shape == (1, 4)  # padded to the longest, not to max_length


def test_tokenizer_save_load(tokenizer: ConcordTokenizer, tmp_path: Path) -> None:
    tokenizer.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    loaded = ConcordTokenizer.load(tmp_path / "tok")
    assert loaded.vocab_size == tokenizer.vocab_size
    for a, b in zip(loaded.encode_batch(CORPUS[:5], 32), tokenizer.encode_batch(CORPUS[:5], 32),
                    strict=True):
        assert torch.equal(a, b)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text("{nope")
    with pytest.raises(ValueError, match="not a valid tokenizer"):
        ConcordTokenizer.load(tmp_path / "bad")


# --------------------------------------------------------------------------- preprocessing


def test_preprocess_letterbox_and_normalisation() -> None:
    img = np.ones((200, 100), dtype=np.float32)  # portrait, white
    x = preprocess(img, 128)
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    box = letterbox(200, 100, 128)
    assert (box.height, box.width, box.top, box.left) == (128, 64, 0, 32)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    raw = x * std + mean
    assert torch.allclose(raw[:, :, 32:96], torch.ones(1), atol=1e-5)  # image: white
    assert torch.allclose(raw[:, :, :32], torch.zeros(1), atol=1e-5)  # padding: black
    # Grey is replicated to every channel.
    assert torch.allclose(raw[0], raw[1], atol=1e-6) and torch.allclose(raw[1], raw[2], atol=1e-6)


def test_preprocess_batch_and_errors() -> None:
    batch = preprocess_batch([_image(300, 200), _image(64, 64)], 128)
    assert batch.shape == (2, 3, 128, 128)
    one = preprocess(_image(64, 64), 128, mean=(0.5,), std=(0.25,))
    assert one.shape == (1, 128, 128)
    with pytest.raises(ValueError, match="2-D"):
        preprocess(np.zeros((4, 4, 3)), 128)
    with pytest.raises(ValueError, match="NaN"):
        preprocess(np.full((4, 4), np.nan), 128)


# --------------------------------------------------------------------------- local weights


def test_local_image_weights(tmp_path: Path) -> None:
    donor = ImageEncoder(get_config("tiny").image)
    state = {k: v.clone() for k, v in donor.trunk.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, donor.num_features)  # a classifier the backbone drops
    state["fc.bias"] = torch.zeros(10)
    path = tmp_path / "vit.safetensors"
    save_file(state, str(path))
    m = create_model("tiny", image_weights=path)
    for k, v in donor.trunk.state_dict().items():
        assert torch.equal(m.visual.trunk.state_dict()[k], v), k
    assert "vit.safetensors" in m.sources["image"]


def test_local_image_weights_refuses_pickles_and_mismatches(tmp_path: Path) -> None:
    for name in ("vit.pth", "pytorch_model.bin"):
        (tmp_path / name).write_bytes(b"\x80\x04not read")
        with pytest.raises(WeightsError, match="pickle"):
            create_model("tiny", image_weights=tmp_path / name)
    cfg = get_config("tiny")
    cfg.image.timm_kwargs["layers"] = [2, 2, 2, 3]
    deeper = ImageEncoder(cfg.image)
    save_file(deeper.trunk.state_dict(), str(tmp_path / "deeper.safetensors"))
    with pytest.raises(WeightsError, match=r"unexpected tensor.*layer4\.2"):
        create_model("tiny", image_weights=tmp_path / "deeper.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        create_model("tiny", image_weights=tmp_path / "junk.safetensors")


def _bert_dir(tmp_path: Path, words: list[str]) -> Path:
    from transformers import BertConfig, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=96)
    torch.manual_seed(1)
    directory = tmp_path / "bert"
    BertModel(cfg).save_pretrained(str(directory))  # transformers 5 writes safetensors only
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return directory


def test_local_bert_directory(tmp_path: Path) -> None:
    from transformers import BertModel

    words = ["no", "pleural", "effusion", "mild", "cardio", "##megaly", "."]
    directory = _bert_dir(tmp_path, words)
    m = create_model("tiny", text_dir=directory).eval()
    assert m.config.text.hidden_size == 64 and m.config.text.num_layers == 2
    assert m.config.text.context_length == 96  # capped by the position table
    assert m.tokenizer is not None and m.tokenizer.source.startswith("pretrained")
    # "___" was added after the pretrained vocabulary; the table grew by one row.
    assert m.tokenizer.vocab_size == len(words) + 6 == m.config.text.vocab_size
    assert m.tokenizer.tokens("Mild cardiomegaly.") == ["[CLS]", "mild", "cardio", "##megaly",
                                                        ".", "[SEP]"]
    ref = BertModel.from_pretrained(str(directory), local_files_only=True)
    ours = m.text.bert.state_dict()
    for k, v in ref.state_dict().items():
        if k.startswith("pooler."):
            continue
        if k == "embeddings.word_embeddings.weight":
            assert torch.equal(ours[k][: v.shape[0]], v)
        else:
            assert torch.equal(ours[k], v), k
    with torch.inference_mode():
        assert m.encode_texts(["no pleural effusion ___"]).shape == (1, m.embed_dim)
        assert m.encode_graphs([extract_graph("FINDINGS: No pleural effusion.")]).shape == (
            1, m.embed_dim)


def test_local_bert_directory_without_safetensors(tmp_path: Path) -> None:
    directory = _bert_dir(tmp_path, ["no"])
    (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="no .safetensors"):
        create_model("tiny", text_dir=directory)


def test_tokenizer_training_is_deterministic() -> None:
    # tokenizers' own trainer broke ties in randomised hash order: same data, different vocabularies.
    texts = [f"Small {side} pleural effusion and {w} atelectasis." for side in ("left", "right") for w in ("mild", "minimal", "patchy")] * 3
    vocabs = [train_wordpiece(texts, vocab_size=200).backend.get_vocab() for _ in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]
    tokenizer = train_wordpiece(texts, vocab_size=200)
    assert tokenizer.tokens("pneumothorax")[1:-1] != ["[UNK]"]  # unseen words are spelled, not lost


def test_channels_last_training_layout_changes_no_value(tokenizer, tmp_path: Path) -> None:
    """The ResNet tower trains with channels-last weights; outputs and checkpoints are unchanged."""
    from core_model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    plain = create_model("tiny", tokenizer=tokenizer).eval()
    assert plain.visual.channels_last  # a convolutional trunk
    fast = create_model("tiny", tokenizer=tokenizer).eval()
    fast.load_state_dict(plain.state_dict())
    fast.visual.weights_channels_last_()
    conv = fast.visual.trunk.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    pixels = preprocess_batch([_image(seed=s) for s in range(3)], 128)
    with torch.no_grad():
        assert torch.allclose(plain.encode_image(pixels), fast.encode_image(pixels), atol=1e-5)
    version = save_checkpoint(plain, tokenizer, tmp_path / "plain", variant="clip")
    assert save_checkpoint(fast, tokenizer, tmp_path / "fast", variant="clip") == version
    loaded = load_checkpoint(tmp_path / "fast")
    assert loaded.version == version
    assert all(t.is_contiguous() for t in loaded.model.state_dict().values())


def test_transformer_trunk_keeps_its_layout() -> None:
    cfg = get_config("paper").image
    cfg.backbone, cfg.image_size = "vit_tiny_patch16_224", 64
    cfg.timm_kwargs = {"depth": 1, "global_pool": "avg"}
    encoder = ImageEncoder(cfg)
    assert not encoder.channels_last
    encoder.weights_channels_last_()
    assert all(p.is_contiguous() for p in encoder.parameters())
