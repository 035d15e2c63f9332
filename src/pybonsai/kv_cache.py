"""KV cache data types and flash attention under llama-cpp-python's names (`type_k`, `type_v`,
`flash_attn`), resolved and checked here against what the pinned llama.cpp accepts, so that a bad
combination is a ValueError naming the cause instead of a failed context creation.

What the pin (llama.cpp 0c1e570, src/llama-context.cpp) requires:
- a quantized V cache needs flash attention (without it llama_init_from_model refuses);
- with flash attention, a quantized K or V type's block size must divide the head size;
- the cache types its own tools accept: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

# ggml_type ids (ggml.h), under the names llama-cpp-python exports (llama_cpp.GGML_TYPE_*).
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_Q4_0 = 2
GGML_TYPE_Q4_1 = 3
GGML_TYPE_Q5_0 = 6
GGML_TYPE_Q5_1 = 7
GGML_TYPE_Q8_0 = 8
GGML_TYPE_IQ4_NL = 20
GGML_TYPE_BF16 = 30

# name -> (ggml type id, block size; 1 for the float types)
KV_CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (GGML_TYPE_F32, 1),
    "f16": (GGML_TYPE_F16, 1),
    "bf16": (GGML_TYPE_BF16, 1),
    "q8_0": (GGML_TYPE_Q8_0, 32),
    "q4_0": (GGML_TYPE_Q4_0, 32),
    "q4_1": (GGML_TYPE_Q4_1, 32),
    "iq4_nl": (GGML_TYPE_IQ4_NL, 32),
    "q5_0": (GGML_TYPE_Q5_0, 32),
    "q5_1": (GGML_TYPE_Q5_1, 32),
}
_NAME_OF = {tid: name for name, (tid, _) in KV_CACHE_TYPES.items()}

# enum llama_flash_attn_type (llama.h)
FLASH_ATTN_AUTO = -1
FLASH_ATTN_DISABLED = 0
FLASH_ATTN_ENABLED = 1
_FLASH_ATTN_WORDS = {"auto": FLASH_ATTN_AUTO, "off": FLASH_ATTN_DISABLED, "on": FLASH_ATTN_ENABLED}

KVType = Union[int, str, None]


@dataclass(frozen=True)
class KVCacheConfig:
    """What goes into llama_context_params: ggml type ids and a llama_flash_attn_type."""

    type_k: int = GGML_TYPE_F16
    type_v: int = GGML_TYPE_F16
    flash_attn: int = FLASH_ATTN_AUTO

    @property
    def names(self) -> tuple[str, str]:
        return type_name(self.type_k), type_name(self.type_v)


def type_name(type_id: int) -> str:
    return _NAME_OF[type_id]


def is_quantized(type_id: int) -> bool:
    return KV_CACHE_TYPES[type_name(type_id)][1] > 1


def parse_type(value: KVType, what: str) -> int:
    """A ggml name ("q8_0", any case) or a GGML_TYPE_* id → the id; None → f16."""
    if value is None:
        return GGML_TYPE_F16
    if isinstance(value, str):
        entry = KV_CACHE_TYPES.get(value.strip().lower())
        if entry is None:
            raise ValueError(f"{what}={value!r} is not a KV cache type; use one of {', '.join(KV_CACHE_TYPES)}")
        return entry[0]
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in _NAME_OF:
            raise ValueError(f"{what}={value} is not a KV cache type id; the ggml types allowed are "
                             + ", ".join(f"{n} ({t})" for n, (t, _) in KV_CACHE_TYPES.items()))
        return value
    raise TypeError(f"{what} must be a ggml type name or a GGML_TYPE_* int, not {type(value).__name__}")


def parse_flash_attn(value: Union[bool, str, int, None]) -> int:
    """llama-cpp-python's bool (True/False), or "on"/"off"/"auto" as llama.cpp's -fa; None = auto,
    llama.cpp's own default (on wherever the device runs flash attention, as the CPU does)."""
    if value is None:
        return FLASH_ATTN_AUTO
    if isinstance(value, bool):
        return FLASH_ATTN_ENABLED if value else FLASH_ATTN_DISABLED
    if isinstance(value, str) and value.strip().lower() in _FLASH_ATTN_WORDS:
        return _FLASH_ATTN_WORDS[value.strip().lower()]
    if isinstance(value, int) and value in (FLASH_ATTN_AUTO, FLASH_ATTN_DISABLED, FLASH_ATTN_ENABLED):
        return value
    raise ValueError(f"flash_attn must be True, False, 'on', 'off' or 'auto', not {value!r}")


def resolve(type_k: KVType, type_v: KVType, flash_attn: Union[bool, str, int, None]) -> KVCacheConfig:
    """Parse llama-cpp-python's arguments and apply the pin's flash-attention rule (module
    docstring); raise ValueError for an invalid combination. Needs no model."""
    k, v = parse_type(type_k, "type_k"), parse_type(type_v, "type_v")
    fa = parse_flash_attn(flash_attn)
    if is_quantized(v):
        if fa == FLASH_ATTN_DISABLED:
            raise ValueError(f"type_v={type_name(v)} (a quantized V cache) requires flash_attn=True "
                             "in this llama.cpp; enable flash attention or use f16/bf16/f32 for V")
        fa = FLASH_ATTN_ENABLED  # what llama.cpp would resolve 'auto' to; it fails if it cannot
    return KVCacheConfig(k, v, fa)


def check_head_dims(config: KVCacheConfig, head_dim_k: int, head_dim_v: int) -> None:
    """With flash attention, a quantized type's block size must divide the model's head size."""
    if config.flash_attn == FLASH_ATTN_DISABLED:
        return
    for what, t, dim in (("type_k", config.type_k, head_dim_k), ("type_v", config.type_v, head_dim_v)):
        block = KV_CACHE_TYPES[type_name(t)][1]
        if dim % block:
            raise ValueError(f"{what}={type_name(t)} has blocks of {block} values, which do not divide "
                             f"this model's head size {dim}")


def head_dims(metadata: dict[str, str], n_embd: int, n_head: int) -> tuple[int, int]:
    """The K and V head sizes from GGUF metadata ({arch}.attention.key_length/value_length),
    else n_embd / n_head as llama.cpp defaults them."""
    arch = metadata.get("general.architecture", "")
    default = n_embd // n_head if n_head else n_embd

    def read(key: str) -> int:
        try:
            return int(metadata[f"{arch}.attention.{key}"])
        except (KeyError, ValueError):
            return default

    return read("key_length"), read("value_length")


def describe(config: Optional[KVCacheConfig]) -> str:
    """"k=q8_0 v=q8_0 fa=on", for tables and logs."""
    c = config or KVCacheConfig()
    fa = {FLASH_ATTN_AUTO: "auto", FLASH_ATTN_DISABLED: "off", FLASH_ATTN_ENABLED: "on"}[c.flash_attn]
    return f"k={type_name(c.type_k)} v={type_name(c.type_v)} fa={fa}"


def add_cli_options(p, bench: bool = False, flash_attn: str = "auto") -> None:
    """llama.cpp's switches: -ctk/-ctv TYPE and -fa on|off|auto, default `flash_attn` (bench:
    comma-separated lists, one configuration per combination, as llama-bench)."""
    lst = " (comma-separated: one configuration each)" if bench else ""
    types = ", ".join(KV_CACHE_TYPES)
    p.add_argument("-ctk", "--cache-type-k", default="f16", help=f"KV cache type for K: {types}{lst}")
    p.add_argument("-ctv", "--cache-type-v", default="f16",
                   help=f"KV cache type for V (quantized V needs flash attention){lst}")
    p.add_argument("-fa", "--flash-attn", default=flash_attn,
                   help=f"flash attention: on, off or auto (default: {flash_attn}){lst}")


def cli_kwargs(args) -> dict:
    """Llama(...) keyword arguments from add_cli_options' parsed switches."""
    return {"type_k": args.cache_type_k, "type_v": args.cache_type_v,
            "flash_attn": _fa_word(args.flash_attn)}


def _fa_word(text: str) -> Union[str, bool]:
    word = text.strip().lower()
    return {"1": "on", "0": "off", "true": "on", "false": "off"}.get(word, word)
