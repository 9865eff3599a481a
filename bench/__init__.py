"""fgbench: a benchmark harness for fine-grained visual categorization transformers."""

__version__ = "0.1.0"
