"""The project's files: atomic writes, the journal, the run guard, the output
folder, confined reads, and git revisions.
"""
