"""How the reference-logit tests compare pybonsai's logits with a NumPy reference.

Per position (row): the relative L2 error over the vocabulary, ||logits - ref|| / ||ref||, must stay
within the test's `rel_tol`; and where the reference's top two logits are more than
6 * rel_tol * rms(ref) apart (per-logit error differences stay below rel_tol * rms * sqrt(2), so this
is a > 4 sigma margin), the top-1 token must agree. Each test module states its tolerance and why.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["compare", "report", "assert_matches", "TOP1_MARGIN_FACTOR"]

TOP1_MARGIN_FACTOR = 6


def compare(logits: np.ndarray, reference: np.ndarray, rel_tol: float) -> dict[str, float]:
    """Error statistics of logits against a reference, both (n_tokens, n_vocab)."""
    diff = np.asarray(logits, dtype=np.float64) - reference
    rel = np.linalg.norm(diff, axis=1) / np.linalg.norm(reference, axis=1)   # per position
    rms = np.sqrt(np.mean(reference ** 2, axis=1))
    top2 = np.sort(reference, axis=1)[:, -2:]
    confident = (top2[:, 1] - top2[:, 0]) > TOP1_MARGIN_FACTOR * rel_tol * rms
    same_top1 = np.argmax(logits, axis=1) == np.argmax(reference, axis=1)
    return {
        "n": len(rel),
        "rel_tol": rel_tol,
        "max_rel": float(rel.max()),
        "median_rel": float(np.median(rel)),
        "max_abs": float(np.abs(diff).max()),
        "top1": float(same_top1.mean()),
        "n_close": int(np.sum(rel <= 1e-4)),
        "n_confident": int(confident.sum()),
        "confident_top1": float(same_top1[confident].mean()) if confident.any() else 1.0,
    }


def report(label: str, s: Mapping[str, float]) -> str:
    return (f"{label}: max rel err {s['max_rel']:.2e} (tol {s['rel_tol']}), median {s['median_rel']:.2e}, "
            f"max abs err {s['max_abs']:.2e}, top-1 agreement {s['top1']:.0%} ({s['confident_top1']:.0%} "
            f"on {s['n_confident']} confident positions), {s['n_close']}/{s['n']} positions within 1e-4")


def assert_matches(logits: np.ndarray, reference: np.ndarray, label: str, rel_tol: float) -> dict[str, float]:
    """compare(), print the result, and assert the tolerance and the confident top-1 agreement."""
    s = compare(logits, reference, rel_tol)
    print(report(label, s))
    assert s["max_rel"] <= rel_tol, report(label, s)
    assert s["confident_top1"] == 1.0, report(label, s)
    return s
