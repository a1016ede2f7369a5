"""medsci: diffusion pipelines for medical and scientific volumes."""

__version__ = "0.1.0"
