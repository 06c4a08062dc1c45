"""fedkube: federated learning across organisations, without moving their data."""

__version__ = "0.1.0"
