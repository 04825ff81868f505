"""banking-es: an event-sourced banking service."""

__version__ = "0.1.0"
