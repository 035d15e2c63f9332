"""pybonsai: run 1-bit (Q1_0) Bonsai LLMs in-process."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Llama", "Engine", "LlamaState", "LlamaRAMCache", "LlamaDiskCache", "LlamaCache",
           "UnsupportedParameterWarning", "TextOnlyWarning", "CancelledError",
           "LlamaGrammar", "LogitsProcessorList", "StoppingCriteriaList", "system_info", "__version__"]
_LAZY = {"LlamaState": "state", "LlamaRAMCache": "llama_cache", "LlamaDiskCache": "llama_cache",
         "LlamaCache": "llama_cache", "BaseLlamaCache": "llama_cache", "UnsupportedParameterWarning": "compat",
         "TextOnlyWarning": "model_info"}


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
    if name in _LAZY or name.startswith(("GGML_TYPE_", "LLAMA_")):
        import importlib  # LLAMA_*: llama-cpp-python's enum constants (pybonsai.compat)
        module = importlib.import_module("." + _LAZY.get(name, "compat" if name.startswith("LLAMA_") else "kv_cache"),
                                         __name__)
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'pybonsai' has no attribute {name!r}")
