"""Known Bonsai models, by short alias, and turning a model name into a local GGUF path.

    resolve_model("bonsai-8b")                      # downloads (or finds in the cache) the 8B
    resolve_model("prism-ml/Bonsai-4B-gguf")        # any Hub repository holding one GGUF
    resolve_model("./Bonsai-8B-Q1_0.gguf")          # a local file: itself
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from . import hub

__all__ = ["CatalogEntry", "MODELS", "DEFAULT_MODEL", "resolve_model", "resolve_hub_model", "describe"]


@dataclass(frozen=True)
class CatalogEntry:
    alias: str
    repo_id: str
    filename: str
    approx_size_gb: float  # approximate download size (GB = 1e9 bytes)
    description: str


# Repository and file names as PrismML publishes them (checked against PrismML's own pages; the
# README's "Models" table says how). The ternary repositories carry three packings of the same
# weights: `*-Q2_0.gguf` is PrismML's deprecated group-128 layout stored under type id 42, which
# llama.cpp (and so pybonsai) reads as the official group-64 Q2_0 and refuses; `*-PQ2_0.gguf` is
# the fork-only type 142; `*-Q2_0_g64.gguf` (27B: `*-Q2_g64.gguf`) is the official Q2_0 that
# loads here (and, since patch 0010, `*-PQ2_0.gguf` too). Bonsai 2 (Ternary-Bonsai-2-27B) ships
# PQ2_0 and PTQ1_0 files of the same weights with PrismML's Hadamard fold (vendor/patches/
# BONSAI2_FORMAT.md names the sources). Bonsai 27B is a vision-language model: the GGUF below is its text part (the
# vision projector is a separate mmproj file, which pybonsai does not run).
MODELS: dict[str, CatalogEntry] = {
    e.alias: e for e in (
        CatalogEntry("bonsai-1.7b", "prism-ml/Bonsai-1.7B-gguf", "Bonsai-1.7B-Q1_0.gguf", 0.24,
                     "Bonsai 1.7B, 1-bit Q1_0 (Qwen3 architecture)"),
        CatalogEntry("bonsai-4b", "prism-ml/Bonsai-4B-gguf", "Bonsai-4B-Q1_0.gguf", 0.57,
                     "Bonsai 4B, 1-bit Q1_0 (Qwen3 architecture)"),
        CatalogEntry("bonsai-8b", "prism-ml/Bonsai-8B-gguf", "Bonsai-8B-Q1_0.gguf", 1.15,
                     "Bonsai 8B, 1-bit Q1_0 (Qwen3 architecture)"),
        CatalogEntry("bonsai-27b", "prism-ml/Bonsai-27B-gguf", "Bonsai-27B-Q1_0.gguf", 3.80,
                     "Bonsai 27B, 1-bit Q1_0 (Qwen3.5 hybrid: Gated DeltaNet + gated attention; "
                     "text only, the vision mmproj is not run)"),
        CatalogEntry("ternary-bonsai-1.7b", "prism-ml/Ternary-Bonsai-1.7B-gguf",
                     "Ternary-Bonsai-1.7B-Q2_0_g64.gguf", 0.47,
                     "Ternary Bonsai 1.7B, ternary Q2_0 group 64 (Qwen3 architecture)"),
        CatalogEntry("ternary-bonsai-4b", "prism-ml/Ternary-Bonsai-4B-gguf",
                     "Ternary-Bonsai-4B-Q2_0_g64.gguf", 1.13,
                     "Ternary Bonsai 4B, ternary Q2_0 group 64 (Qwen3 architecture)"),
        CatalogEntry("ternary-bonsai-8b", "prism-ml/Ternary-Bonsai-8B-gguf",
                     "Ternary-Bonsai-8B-Q2_0_g64.gguf", 2.31,
                     "Ternary Bonsai 8B, ternary Q2_0 group 64 (Qwen3 architecture)"),
        CatalogEntry("ternary-bonsai-27b", "prism-ml/Ternary-Bonsai-27B-gguf",
                     "Ternary-Bonsai-27B-Q2_g64.gguf", 7.6,
                     "Ternary Bonsai 27B, ternary Q2_0 group 64 (Qwen3.5 hybrid; text only, the "
                     "vision mmproj is not run)"),
        CatalogEntry("ternary-bonsai-2-27b", "prism-ml/Ternary-Bonsai-2-27B-gguf",
                     "Ternary-Bonsai-2-27B-PQ2_0.gguf", 7.6,
                     "Ternary Bonsai 2 27B, PrismML's PQ2_0 (2.125 bits/weight) with the Hadamard fold "
                     "(Qwen3.5 hybrid; text only)"),
        CatalogEntry("ternary-bonsai-2-27b-ptq1", "prism-ml/Ternary-Bonsai-2-27B-gguf",
                     "Ternary-Bonsai-2-27B-PTQ1_0.gguf", 5.95,
                     "Ternary Bonsai 2 27B, PrismML's PTQ1_0 (1.75 bits/weight, same weights as PQ2_0) "
                     "with the Hadamard fold (Qwen3.5 hybrid; text only)"),
    )
}

DEFAULT_MODEL = "bonsai-1.7b"

_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def describe() -> str:
    """One line per known alias (sizes are approximate)."""
    return "\n".join(f"{e.alias:<19} {e.repo_id}/{e.filename}  (~{e.approx_size_gb:.2f} GB)"
                     for e in MODELS.values())


def _known() -> str:
    return ", ".join(MODELS)


def resolve_hub_model(name: str, **hub_kwargs: Any) -> Path:
    """A catalog alias or an "owner/name" Hub repository to a local GGUF path (downloading it
    into the Hugging Face cache if needed). `hub_kwargs` go to pybonsai.hub.from_pretrained
    (filename, revision, cache_dir, local_files_only); an explicit filename overrides the alias's."""
    entry = MODELS.get(name.lower()) if isinstance(name, str) else None
    if entry is not None:
        kwargs = dict(hub_kwargs)
        if kwargs.get("filename") is None:
            kwargs["filename"] = entry.filename
        return hub.from_pretrained(entry.repo_id, **kwargs)
    if isinstance(name, str) and _REPO_RE.match(name) and not name.lower().endswith(".gguf"):
        return hub.from_pretrained(name, **hub_kwargs)
    raise ValueError(f"unknown model {name!r}: not a catalog alias ({_known()}) nor a Hub repository "
                     "('owner/name')")


def resolve_model(name: Union[str, "os.PathLike[str]"], **hub_kwargs: Any) -> Path:
    """A model given as a local file, a catalog alias (see MODELS) or an "owner/name" Hub
    repository, to a local GGUF path.

    An existing path wins over everything else. Names that look like files (ending in .gguf,
    or starting with "/", "./", "~") but do not exist raise FileNotFoundError; names that are
    neither raise ValueError listing the known aliases."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name:
        raise TypeError(f"model must be a non-empty str or path, got {name!r}")
    path = Path(name).expanduser()
    if path.exists():
        return path
    if name.lower() in MODELS or (_REPO_RE.match(name) and not name.lower().endswith(".gguf")):
        return resolve_hub_model(name, **hub_kwargs)
    if name.lower().endswith(".gguf") or name.startswith(("/", "./", "../", "~", ".\\")) or os.sep in name:
        raise FileNotFoundError(f"model file not found: {path}")
    raise ValueError(f"unknown model {name!r}: not a file, a catalog alias ({_known()}) nor a Hub repository "
                     "('owner/name')")
