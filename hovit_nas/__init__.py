"""hovit-nas: neural-architecture search for small, fast hybrid CNN/transformer classifiers."""
__version__ = "0.1.0"
