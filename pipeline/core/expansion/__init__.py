"""Expansion: a manifest's matrices, fan-out and templates into instances, each with
its identity (key, fingerprint, seed).
"""
