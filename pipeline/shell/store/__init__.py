"""The project's files: atomic writes, the journal, the run guard, the output
folder, confined reads, the review file, and git revisions.
"""
