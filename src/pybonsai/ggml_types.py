"""ggml tensor types known to the pinned llama.cpp: block sizes and names.

The `gguf` package on PyPI lags the pin: it has no Q2_0 (type 42), the ternary Bonsai type, nor
PrismML's PQ2_0 / PTQ1_0 (142 / 143), which our patch queue adds. This
table is the gguf package's, completed with the types the pin adds, so that our GGUF scanner and
`pybonsai info` accept every file the pinned loader accepts.
"""
from __future__ import annotations

__all__ = ["quant_size", "type_name", "bits_per_weight"]

# type id -> (name, weights per block, bytes per block), for types the gguf package may lack
_EXTRA = {
    41: ("Q1_0", 128, 18),
    42: ("Q2_0", 64, 18),
    # PrismML's Bonsai 2 types (vendor/patches/0010; layouts: pybonsai.prism_types)
    142: ("PQ2_0", 128, 34),
    143: ("PTQ1_0", 128, 28),
}


def quant_size(ttype: int) -> tuple[int, int]:
    """(weights per block, bytes per block) of a ggml type id; KeyError when unknown."""
    if ttype in _EXTRA:
        return _EXTRA[ttype][1:]
    import gguf
    try:
        return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
    except ValueError:
        raise KeyError(ttype) from None


def type_name(ttype: int) -> str:
    """ggml's name of a type id (`Q2_0`), or `type<N>` when unknown."""
    if ttype in _EXTRA:
        return _EXTRA[ttype][0]
    import gguf
    try:
        return gguf.GGMLQuantizationType(ttype).name
    except ValueError:
        return f"type{ttype}"


def bits_per_weight(ttype: int) -> float:
    """Stored bits per weight of a type id (Q1_0: 1.125, Q2_0: 2.25)."""
    block, size = quant_size(ttype)
    return 8.0 * size / block
