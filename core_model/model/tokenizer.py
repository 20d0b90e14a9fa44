"""WordPiece tokenisation for the text and graph encoders.

Concord uses the ``tokenizers`` library (the Rust tokenizer transformers' fast
tokenizers wrap) directly, so a checkpoint's tokenizer is a single
``tokenizer.json`` that needs neither transformers nor network access to load.

Two sources:

* :func:`train_wordpiece` trains a BERT-style WordPiece vocabulary on the
  training reports (BERT normaliser with lowercasing, ``BertPreTokenizer``,
  ``[PAD] [UNK] [CLS] [SEP] [MASK]``, ``[CLS] ... [SEP]`` post-processing), as
  the product needs when no pretrained tokenizer is given.
* :meth:`ConcordTokenizer.from_pretrained_dir` wraps a local HuggingFace
  directory (BioClinicalBERT's): its ``tokenizer.json``, else its ``vocab.txt``
  with BERT's pipeline (lowercasing as its ``tokenizer_config.json`` says,
  default on, as transformers' ``BertTokenizer`` defaults).

MIMIC's de-identification spans ``___`` are one added token in every Concord
tokenizer: BERT's pre-tokeniser would otherwise split them into three ``_``
pieces, and a run of anonymised names would eat the context window.  For a
pretrained vocabulary that lacks it, the token is appended after the vocabulary
and :func:`core_model.model.create_model` grows the embedding table to match.
"""

from __future__ import annotations

import json
import os
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
#: MIMIC-CXR's de-identification placeholder, kept as one token.
DEID_TOKEN = "___"
TOKENIZER_FILE = "tokenizer.json"


class ConcordTokenizer:
    """A ``tokenizers.Tokenizer`` with the batch encoding the model needs."""

    def __init__(self, tokenizer: Tokenizer, *, source: str = "trained") -> None:
        for token in (PAD, UNK, CLS, SEP):
            if tokenizer.token_to_id(token) is None:
                raise ValueError(f"tokenizer has no {token} token; Concord needs BERT's specials")
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        self._truncation: int | None = None
        self.source = source
        self.pad_id: int = tokenizer.token_to_id(PAD)
        self.unk_id: int = tokenizer.token_to_id(UNK)
        self.cls_id: int = tokenizer.token_to_id(CLS)
        self.sep_id: int = tokenizer.token_to_id(SEP)

    # ---- size and lookup

    @property
    def vocab_size(self) -> int:
        """Ids in use, added tokens included (the embedding table must be this big)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def tokens(self, text: str) -> list[str]:
        """Word pieces of ``text`` with ``[CLS]``/``[SEP]``, untruncated, for inspection."""
        self._set_truncation(None)
        return self._tok.encode(text).tokens

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids))

    # ---- encoding

    def encode_batch(
        self, texts: Sequence[str], max_length: int, *, add_special_tokens: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, both ``LongTensor[B, L]``, right-padded.

        ``L`` is the longest encoding in the batch, at most ``max_length``;
        truncation keeps the closing ``[SEP]``.  An empty batch gives ``[0, 1]``
        tensors of padding so shapes stay two-dimensional.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of texts, not one str")
        if max_length < (3 if add_special_tokens else 1):
            raise ValueError(f"max_length {max_length} is too small")
        self._set_truncation(max_length)
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        width = max((len(e.ids) for e in encodings), default=1) or 1
        ids = torch.full((len(encodings), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encodings), width), dtype=torch.long)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            if n:
                ids[row, :n] = torch.tensor(enc.ids, dtype=torch.long)
                mask[row, :n] = 1
        return ids, mask

    def _set_truncation(self, max_length: int | None) -> None:
        # The backend keeps truncation as state; change it only when it differs.
        if self._truncation != max_length:
            if max_length is None:
                self._tok.no_truncation()
            else:
                self._tok.enable_truncation(max_length)
            self._truncation = max_length

    # ---- persistence

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``directory/tokenizer.json`` (created if needed); returns its path."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self._set_truncation(None)
        target = path / TOKENIZER_FILE
        self._tok.save(str(target))
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ConcordTokenizer:
        """Read ``directory/tokenizer.json`` (as :meth:`save` writes it)."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {TOKENIZER_FILE} in {directory}")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception
            raise ValueError(f"not a valid tokenizer file ({exc})") from None
        return cls(tok, source="loaded")

    @classmethod
    def from_pretrained_dir(cls, directory: str | os.PathLike[str]) -> ConcordTokenizer:
        """Wrap a local HuggingFace tokenizer: ``tokenizer.json``, else ``vocab.txt``."""
        path = Path(directory)
        if (path / TOKENIZER_FILE).is_file():
            tok = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        elif (path / "vocab.txt").is_file():
            tok = Tokenizer(models.WordPiece.from_file(str(path / "vocab.txt"), unk_token=UNK))
            _bert_pipeline(tok, lowercase=_lowercase(path))
        else:
            raise FileNotFoundError(f"no {TOKENIZER_FILE} or vocab.txt in {directory}")
        _add_deid_token(tok)
        return cls(tok, source=f"pretrained:{path.name}")

    def __repr__(self) -> str:
        return f"ConcordTokenizer(vocab_size={self.vocab_size}, source={self.source!r})"


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2
) -> ConcordTokenizer:
    """Build a lowercase BERT WordPiece vocabulary from ``texts`` (reports or sentences).

    The vocabulary is built deterministically: the special tokens, every
    character seen (word-initial and ``##`` continuation, so any word can be
    spelled), then whole words by descending frequency (ties alphabetical) up
    to ``vocab_size``.  ``tokenizers``' own trainer breaks ties between equally
    frequent merges in hash-map order, which Rust randomises per process, so
    two runs with the same seed got different vocabularies (and different
    models); radiology's small vocabulary is covered well by whole words.
    The ``___`` token is added on top, so the result's
    :attr:`~ConcordTokenizer.vocab_size` is at most ``vocab_size + 1``.
    """
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    counts.pop(DEID_TOKEN, None)
    # Letters and digits always, so any English word can be spelled even if unseen.
    chars = sorted({c for word in counts for c in word} | set(string.ascii_lowercase + string.digits))
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]))
    known = set(vocab)
    words = sorted((w for w, n in counts.items() if n >= min_frequency and w not in known),
                   key=lambda w: (-counts[w], w))
    vocab += words[: max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=UNK))
    # Mark the specials as such (same ids) so decoding skips them, as a trained BERT vocab does.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.decoder = decoders.WordPiece()
    _bert_pipeline(tok, lowercase=True)
    _add_deid_token(tok)
    return ConcordTokenizer(tok, source="trained")


def _bert_pipeline(tok: Tokenizer, *, lowercase: bool) -> None:
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    if cls_id is not None and sep_id is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}",
            pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
            special_tokens=[(CLS, cls_id), (SEP, sep_id)],
        )


def _add_deid_token(tok: Tokenizer) -> None:
    # Added tokens are matched before pre-tokenisation, so "___" is never split.
    tok.add_tokens([AddedToken(DEID_TOKEN, single_word=False, normalized=False)])


def _lowercase(directory: Path) -> bool:
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            return bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True))
        except (json.JSONDecodeError, AttributeError):
            return True
    return True

