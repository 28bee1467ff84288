"""Tooling for the model-serving-gitops Copier template."""

__version__ = "0.1.0"
