"""Models: ``Sequential`` (and the model API it shares), and Keras' ``keras.models`` functions."""
from cdnn.models.cloning import clone_model
from cdnn.models.sequential import Sequential, load_model
from cdnn.saving import model_from_json, save_model

__all__ = ["Sequential", "load_model", "save_model", "model_from_json", "clone_model"]
