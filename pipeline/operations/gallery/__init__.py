"""The gallery and review: the model, the static page and the review server (the
review file itself is the store's: ``pipeline.shell.store.review``).
"""
