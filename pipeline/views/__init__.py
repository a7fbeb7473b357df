"""Renderers: pure functions from the core's values to what people read (text, HTML)."""
