"""icrl: in-context recall and template regression with one-layer transformers, in Lightning."""

__version__ = "0.1.0"
