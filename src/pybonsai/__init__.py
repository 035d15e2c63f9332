"""pybonsai: run 1-bit (Q1_0) Bonsai LLMs in-process."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Llama", "Engine", "LlamaState", "LlamaRAMCache", "LlamaDiskCache", "LlamaCache",
           "UnsupportedParameterWarning", "TextOnlyWarning", "CancelledError",
           "LlamaGrammar", "LogitsProcessorList", "StoppingCriteriaList", "system_info", "__version__"]
_LAZY = {"LlamaState": "state", "LlamaRAMCache": "llama_cache", "LlamaDiskCache": "llama_cache",
         "LlamaCache": "llama_cache", "BaseLlamaCache": "llama_cache", "UnsupportedParameterWarning": "compat",
         "TextOnlyWarning": "model_info",
         # llama-cpp-python's other top-level names (its llama.py imports them)
         "LlamaTokenizer": "llama_tokenizer", "BaseLlamaTokenizer": "llama_tokenizer",
         "LlamaHFTokenizer": "llama_tokenizer", "LlamaDraftModel": "llama_speculative",
         "LlamaPromptLookupDecoding": "llama_speculative", "MinTokensLogitsProcessor": "logits",
         "LogitsProcessor": "logits", "StoppingCriteria": "logits", "json_schema_to_gbnf": "grammar"}
# Modules llama-cpp-python users reach as attributes (llama_cpp.llama_chat_format, ...).
_SUBMODULES = ("llama_types", "llama_chat_format", "llama_speculative", "llama_tokenizer", "llama_grammar",
               "llama_cache")

# Every llama_types name at the top level, as `from llama_cpp import ChatCompletionRequestUserMessage`
# expects (pure Python: no compiled core needed).
from .llama_types import *  # noqa: E402,F401,F403
from . import llama_types as _llama_types  # noqa: E402

__all__ += list(_llama_types.__all__) + [n for n in _LAZY if n not in __all__ and n != "LlamaPromptLookupDecoding"]


def __getattr__(name: str):
    # Import the compiled core only when it is needed, so that the pure-Python modules
    # (chat templates, text assembly, synthetic models) import without it.
    if name == "Llama":
        from .llama import Llama
        return Llama
    if name == "Engine":
        from .engine import Engine
        return Engine
    if name == "CancelledError":  # raised by work stopped with Llama.cancel()
        from ._core import CancelledError
        return CancelledError
    if name == "LlamaGrammar":
        from .grammar import LlamaGrammar
        return LlamaGrammar
    if name in ("LogitsProcessorList", "StoppingCriteriaList"):
        from . import logits
        return getattr(logits, name)
    if name == "system_info":
        from .backends import system_info
        return system_info
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module("." + name, __name__)
    if name in _LAZY or name.startswith(("GGML_TYPE_", "LLAMA_")):
        import importlib  # LLAMA_*: llama-cpp-python's enum constants (pybonsai.compat)
        module = importlib.import_module("." + _LAZY.get(name, "compat" if name.startswith("LLAMA_") else "kv_cache"),
                                         __name__)
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'pybonsai' has no attribute {name!r}")
