"""llama-cpp-python's module path `llama_cpp.llama_grammar`: the grammar type and the JSON-schema
converter (both live in pybonsai.grammar)."""
from .grammar import LlamaGrammar, json_schema_to_gbnf

__all__ = ["LlamaGrammar", "json_schema_to_gbnf"]
