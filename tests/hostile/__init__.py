"""Hostile inputs: manifests, templates and files written to hang, exhaust memory or crash."""
