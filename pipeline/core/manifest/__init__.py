"""The manifest: YAML text with positions, its JSON Schema, the declared model (jobs,
matrices, references) and the job graph.
"""
