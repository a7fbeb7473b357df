"""Lockfile values: entries, their life as pure transitions, merging, moves, reuse of
paid results, and the lockfile's strict schema.
"""
