"""Models: ``Sequential`` (and the model API it shares)."""
from cdnn.models.sequential import Sequential, load_model

__all__ = ["Sequential", "load_model"]
