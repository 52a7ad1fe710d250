"""Multi-Task Variational Information Bottleneck (MTVIB) in TensorFlow 2 / Keras 3 / TFP."""

__version__ = "0.1.0"
