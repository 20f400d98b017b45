"""braintumor: find and outline brain tumours in multi-modal MRI."""

__version__ = "0.1.0"

__all__ = ["__version__"]
