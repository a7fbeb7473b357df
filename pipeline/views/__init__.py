"""Presentation: how results read as text, JSON and markdown (no I/O, no decisions)."""
