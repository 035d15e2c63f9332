"""llama-cpp-python's parameters that pybonsai accepts for compatibility but cannot (or does not
yet) honour. Every such parameter is accepted and reported once per call site through Python's
warnings module (an `UnsupportedParameterWarning` naming the parameter and the reason), never
silently dropped and never a TypeError.

Also: kv_overrides validation and llama-cpp-python's detokenize(prev_tokens=) offset mapping."""
from __future__ import annotations

import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Union

__all__ = ["UnsupportedParameterWarning", "warn_unsupported", "check_kv_overrides", "ignored_llama_args",
           "ignored_sampling_args", "pending_feature_args"]


# llama.h's enums under llama-cpp-python's names (llama_cpp.LLAMA_POOLING_TYPE_MEAN, ...).
LLAMA_DEFAULT_SEED = 0xFFFFFFFF
(LLAMA_POOLING_TYPE_UNSPECIFIED, LLAMA_POOLING_TYPE_NONE, LLAMA_POOLING_TYPE_MEAN, LLAMA_POOLING_TYPE_CLS,
 LLAMA_POOLING_TYPE_LAST, LLAMA_POOLING_TYPE_RANK) = (-1, 0, 1, 2, 3, 4)
(LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED, LLAMA_ROPE_SCALING_TYPE_NONE, LLAMA_ROPE_SCALING_TYPE_LINEAR,
 LLAMA_ROPE_SCALING_TYPE_YARN, LLAMA_ROPE_SCALING_TYPE_LONGROPE) = (-1, 0, 1, 2, 3)
LLAMA_ATTENTION_TYPE_UNSPECIFIED, LLAMA_ATTENTION_TYPE_CAUSAL, LLAMA_ATTENTION_TYPE_NON_CAUSAL = -1, 0, 1
LLAMA_SPLIT_MODE_NONE, LLAMA_SPLIT_MODE_LAYER, LLAMA_SPLIT_MODE_ROW = 0, 1, 2
CONSTANTS = [name for name in dir() if name.startswith("LLAMA_")]


class UnsupportedParameterWarning(UserWarning):
    """A llama-cpp-python parameter was given that pybonsai accepts but cannot apply."""


def warn_unsupported(name: str, reason: str, stacklevel: int = 3) -> None:
    """Warn that parameter `name` has no effect, and why. Python shows a given warning once per
    call site by default ("warn once"); with warnings as errors it raises."""
    warnings.warn(f"{name}: {reason}", UnsupportedParameterWarning, stacklevel=stacklevel + 1)


def _warn_each(found: Mapping[str, str], stacklevel: int) -> None:
    for name, reason in found.items():
        warn_unsupported(name, reason, stacklevel=stacklevel + 1)


# -- Llama(...) --------------------------------------------------------------------------------

def ignored_llama_args(*, lora_base: Optional[str], lora_path: Optional[str], lora_scale: float,
                       tokenizer: Any, spm_infill: bool, extra: Mapping[str, Any], stacklevel: int = 2) -> None:
    """Warn for each Llama() argument given with a value pybonsai cannot apply."""
    found: Dict[str, str] = {}
    if lora_base is not None:
        found["lora_base"] = ("llama.cpp applies adapters to the loaded model itself and no longer reads "
                              "a separate base model")
    if lora_path is None and lora_scale != 1.0:
        found["lora_scale"] = "no LoRA adapter is loaded (lora_path is None)"
    if tokenizer is not None:
        found["tokenizer"] = "pybonsai always uses the GGUF's own tokenizer (llama.cpp's)"
    if spm_infill:
        found["spm_infill"] = "infill (fill-in-the-middle) prompts are not built by pybonsai; suffix= is appended text"
    for name in extra:
        found[name] = "not a parameter of llama-cpp-python's Llama or of pybonsai's; ignored"
    _warn_each(found, stacklevel)


def pending_feature_args(found: Mapping[str, Any], stacklevel: int = 2) -> None:
    """Warn for arguments whose feature another part of pybonsai implements but which has not
    landed in this build (each value is the owning feature's name)."""
    _warn_each({name: f"not implemented yet in this pybonsai build ({feature}); ignored"
                for name, feature in found.items()}, stacklevel)


_numa_strategy: Optional[int] = None


def init_numa(numa: Union[bool, int]) -> None:
    """Llama(numa=...): True = distribute, or a ggml_numa_strategy (1 distribute, 2 isolate,
    3 numactl, 4 mirror). llama.cpp applies it once per process; a different later choice warns."""
    global _numa_strategy
    if isinstance(numa, bool) or numa is None:
        strategy = 1 if numa else 0
    elif isinstance(numa, int):
        strategy = numa
    else:
        raise TypeError(f"numa must be a bool or an int strategy, got {numa!r}")
    if not 0 <= strategy <= 4:
        raise ValueError(f"numa must be True/False or a strategy in 0..4, got {numa!r}")
    if strategy == 0:
        return
    from . import _core
    if _numa_strategy is None:
        _core.numa_init(strategy)
        _numa_strategy = strategy
    elif strategy != _numa_strategy:
        warn_unsupported("numa", f"NUMA strategy {_numa_strategy} is already set for this process; "
                                 f"{strategy} is not applied", stacklevel=4)


# -- sampling ----------------------------------------------------------------------------------

def ignored_sampling_args(*, tfs_z: float = 1.0, penalize_nl: bool = True, stacklevel: int = 2) -> None:
    """Sampling knobs that llama.cpp itself removed (llama-cpp-python accepts and ignores them too)."""
    found: Dict[str, str] = {}
    if tfs_z != 1.0:
        found["tfs_z"] = "tail-free sampling was removed from llama.cpp (llama-cpp-python ignores it too)"
    if not penalize_nl:
        found["penalize_nl"] = ("llama.cpp removed this switch: newlines are penalized like any other token "
                                "(llama-cpp-python ignores it too)")
    _warn_each(found, stacklevel)


# -- model loading -----------------------------------------------------------------------------

_KV_STR_MAX = 127  # llama_model_kv_override.val_str is char[128], NUL included


def check_kv_overrides(kv_overrides: Optional[Mapping[str, Union[bool, int, float, str]]]
                       ) -> list[tuple[str, Union[bool, int, float, str]]]:
    """Validate llama-cpp-python's kv_overrides dict (GGUF key -> bool/int/float/str) into a
    list of pairs for the loader; raise naming the bad entry."""
    if kv_overrides is None:
        return []
    if not isinstance(kv_overrides, Mapping):
        raise TypeError(f"kv_overrides must be a dict of GGUF key -> bool/int/float/str, got {type(kv_overrides).__name__}")
    out = []
    for key, value in kv_overrides.items():
        if not isinstance(key, str) or not key or len(key.encode("utf-8")) > 127:
            raise ValueError(f"kv_overrides: key {key!r} must be a non-empty str of at most 127 bytes")
        if isinstance(value, str):
            if len(value.encode("utf-8")) > _KV_STR_MAX:
                raise ValueError(f"kv_overrides: value for {key!r} is longer than {_KV_STR_MAX} bytes")
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if not -2**63 <= value < 2**63:
                raise ValueError(f"kv_overrides: value for {key!r} does not fit in int64")
        elif not isinstance(value, float):
            raise ValueError(f"kv_overrides: value for {key!r} must be bool, int, float or str, got {value!r}")
        out.append((key, value))
    return out


# -- OpenAI client types -----------------------------------------------------------------------

def create_chat_completion_openai_v1(llm, *args: Any, **kwargs: Any):
    """llama-cpp-python's create_chat_completion_openai_v1: create_chat_completion's result as the
    openai package's pydantic models (ChatCompletion, or ChatCompletionChunks with stream=True)."""
    try:
        from openai.types.chat import ChatCompletion, ChatCompletionChunk
    except ImportError as exc:
        raise ImportError("create_chat_completion_openai_v1 needs the openai package: pip install openai") from exc
    result = llm.create_chat_completion(*args, **kwargs)
    if kwargs.get("stream", False):
        return (ChatCompletionChunk(**chunk) for chunk in result)
    return ChatCompletion(**result)


# -- tokens ------------------------------------------------------------------------------------

def join_pieces(model, tokens: Sequence[int], special: bool) -> bytes:
    """llama-cpp-python's detokenization: every token's piece as the vocabulary spells it, joined,
    then one leading space dropped if the first token is BOS (SentencePiece vocabularies mark a
    word start with a space, which a text that began with BOS did not have)."""
    tokens = [int(t) for t in tokens]
    out = b"".join([model.token_to_piece(t, special) for t in tokens])
    if tokens and tokens[0] == model.token_bos and out[:1] == b" ":
        out = out[1:]
    return out


def detokenize_after(detokenize, tokens: Sequence[int], prev_tokens: Optional[Sequence[int]],
                     special: bool) -> bytes:
    """The bytes `tokens` add after `prev_tokens` (llama-cpp-python's prev_tokens offset mapping),
    so that tokenizers which change a piece by context (a leading space) stay consistent."""
    if not prev_tokens:
        return detokenize(list(tokens), special)
    before = detokenize(list(prev_tokens), special)
    whole = detokenize(list(prev_tokens) + list(tokens), special)
    return whole[len(before):] if whole.startswith(before) else detokenize(list(tokens), special)
