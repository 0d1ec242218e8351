"""servicetime: delivery service-time prediction, the library behind every pipeline step."""

__version__ = "0.1.0"
