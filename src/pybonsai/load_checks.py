"""Checks of a GGUF's header before llama.cpp loads the model (Llama calls check_before_load).

- A file of a vision-language model (metadata keys or tensors of a vision tower / projector)
  gets one TextOnlyWarning: pybonsai loads the text part only; the separate mmproj file that
  holds the vision part is never run. (At this llama.cpp pin a GGUF that bundles vision tensors
  with the text model is refused by the loader: "wrong number of tensors".)
- Malformed files are left to llama.cpp's own parser, whose errors name the file and the cause.
"""
from __future__ import annotations

import os

from . import model_info
from .gguf_file import GGUFError, scan_gguf

__all__ = ["check_before_load"]


def check_before_load(path: str | os.PathLike, stacklevel: int = 1) -> None:
    """Scan `path`'s header (a few ms, ~0.1 s with a 150k-token vocabulary) and warn as the
    module doc says. `stacklevel` as warnings.warn's: 1 names the line calling this function."""
    try:
        summary = scan_gguf(path)
    except (GGUFError, OSError):
        return  # llama.cpp reports it, in its words
    markers = model_info.vision_markers(summary.metadata, (t.name for t in summary.tensors))
    if markers:
        model_info.warn_text_only(str(path), markers, stacklevel=stacklevel + 1)
