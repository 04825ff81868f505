"""Statements as documents: JSON and CSV (`documents`), PDF (`pdf`); the API picks by `Accept`."""
