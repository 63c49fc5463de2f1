"""Postern: an nginx-compatible mail proxy."""

__version__ = "0.1.0"
