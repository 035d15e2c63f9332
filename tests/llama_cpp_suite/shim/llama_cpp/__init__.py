"""An import shim: `llama_cpp` as a name for pybonsai, so that llama-cpp-python's own tests run
unchanged against pybonsai (tests/llama_cpp_suite/). Every `llama_cpp.X` submodule resolves to
`pybonsai.X`; the ctypes layer (`llama_cpp.llama_cpp`, `llama_cpp._internals`, ...) is not
provided by pybonsai and resolves to a module that says so when used."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

import pybonsai
from pybonsai import *  # noqa: F401,F403
from pybonsai import __version__  # noqa: F401

# llama-cpp-python modules that wrap the C API through ctypes; pybonsai has no counterpart.
CTYPES_MODULES = ("llama_cpp", "_internals", "_ctypes_extensions", "_ggml", "llava_cpp", "mtmd_cpp",
                  "llama_cpp_ext", "_utils", "_logger")


class CtypesLayerNotProvided(AttributeError):
    """Raised when a test reaches for llama-cpp-python's ctypes layer."""


class _CtypesPlaceholder(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise CtypesLayerNotProvided(
            f"{self.__name__}.{name}: llama-cpp-python's ctypes layer is not provided by pybonsai")


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """llama_cpp.X -> pybonsai.X (or the ctypes placeholder)."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(__name__ + "."):
            return None
        tail = fullname[len(__name__) + 1:]
        if tail.split(".")[0] in CTYPES_MODULES or importlib.util.find_spec("pybonsai." + tail) is not None:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        tail = spec.name[len(__name__) + 1:]
        if tail.split(".")[0] in CTYPES_MODULES:
            return _CtypesPlaceholder(spec.name)
        return importlib.import_module("pybonsai." + tail)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Alias())


def __getattr__(name: str):
    try:
        return getattr(pybonsai, name)
    except AttributeError:
        raise CtypesLayerNotProvided(
            f"llama_cpp.{name}: not in pybonsai (llama-cpp-python's ctypes layer is not provided)") from None
