"""Build the world model's CLIPTokenizer from a vocabulary we write ourselves.

CLIP's tokenizer is byte-level BPE: every byte maps to a printable symbol, a word's last symbol
carries the `</w>` suffix, and merges glue symbols into tokens. We ship all 256 byte symbols (with
and without `</w>`), so any text round-trips, plus merge chains that make each word of the shapes
world (and rare identifiers such as "sks") a single token.

    >>> from lorabooth.world.tokenizer import build_tokenizer
    >>> tok = build_tokenizer("out/tokenizer")       # writes vocab.json, merges.txt, configs
    >>> tok("a photo of sks star").input_ids          # [bos, a, photo, of, sks, star, eos]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .generator import BACKGROUND_STYLES, COLOURS, PATTERNS, SHAPES, SIZES

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 77

# Rare identifiers DreamBooth binds subjects to; they never occur in pre-training captions.
RARE_TOKENS: tuple[str, ...] = ("sks", "zwx", "ohwx", "qxv", "vkj")
EXTRA_WORDS: tuple[str, ...] = (
    "a", "an", "the", "photo", "picture", "image", "of", "on", "in", "with", "and", "background",
    "shape", "dog", "cat", "toy", "style", "big", "tiny", "checked", "spotted", "stripes",
)


def world_words() -> list[str]:
    """Every word the world's captions and DreamBooth prompts use, in a stable order."""
    words = list(EXTRA_WORDS) + list(SHAPES) + list(COLOURS) + list(PATTERNS) + list(BACKGROUND_STYLES)
    words += list(SIZES) + list(RARE_TOKENS)
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _apply_merges(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the best-ranked adjacent pair until none is known."""
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), -1), i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if (a, b) in ranks]
        if not pairs:
            break
        _, i = min(pairs)
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
    return parts


def build_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The vocabulary (token -> id) and the ordered merge rules."""
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    for s in symbols:
        vocab.setdefault(s + "</w>", len(vocab))
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in world_words():
        # Apply the merges we already have (as the tokenizer will), then chain the leftovers left to
        # right. Later rules rank lower, so they can never split a word that is already whole.
        parts = _apply_merges(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(f"{pair[0]} {pair[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    vocab.setdefault(BOS, len(vocab))
    vocab.setdefault(EOS, len(vocab))
    return vocab, merges


def _atomic_write(path: Path, text: str) -> None:
    from lorabooth.adapters.serialization import atomic_write_text  # torch: only needed when writing files

    atomic_write_text(path, text)


def write_tokenizer_files(out_dir: str | os.PathLike) -> Path:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab_and_merges()
    _atomic_write(out / "vocab.json", json.dumps(vocab, ensure_ascii=False, indent=1))
    _atomic_write(out / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }
    _atomic_write(out / "tokenizer_config.json", json.dumps(config, indent=2))
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    _atomic_write(out / "special_tokens_map.json", json.dumps(special, indent=2))
    return out


def build_tokenizer(out_dir: str | os.PathLike):
    """Write the tokenizer files to `out_dir` and load them back as a `transformers.CLIPTokenizer`."""
    from transformers import CLIPTokenizer  # lazy: keeps `import lorabooth.world` light

    path = write_tokenizer_files(out_dir)
    return CLIPTokenizer.from_pretrained(str(path), model_max_length=MODEL_MAX_LENGTH)
