"""Exporting a model for inference elsewhere: ``model.export(path, format="onnx")``."""

from cdnn.export.onnx import export_onnx

__all__ = ["export_onnx"]
