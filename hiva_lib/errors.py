"""Errors shared by the subpackages: here so that the model can raise them without importing the
engine (model -> engine would be a layer leak)."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the run asking for it."""


def key_problems(missing: list[str], unexpected: list[str], shapes: list[str]) -> list[str]:
    """One line per kind of mismatch between two state dicts ('missing: a, b (+3 more)'), the
    first five names of each: the body of a weight-loading error."""
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    return problems
