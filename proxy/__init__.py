"""tuned-proxy: an OpenAI-compatible proxy for fine-tuned chat models."""

__version__ = "0.1.0"
