"""The gallery and review: the model, the static page, the review file and the
review server.
"""
