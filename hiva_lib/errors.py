"""Errors shared by the rooms: here so that the model can raise them without importing the
engine (model -> engine would be a layer leak)."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the run asking for it."""
