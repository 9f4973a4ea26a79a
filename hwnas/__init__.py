"""hwnas: hardware-aware neural architecture search through Apache TVM."""

__version__ = "0.1.0"
