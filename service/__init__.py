"""The BentoML service: entry (HTTP, audio, assembly) and recognizer (batched ONNX Runtime)."""

__version__ = "0.1.0"  # the project's version (pyproject.toml); tests keep the two equal
