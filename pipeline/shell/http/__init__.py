"""Talking to the API over HTTP: the client, its endpoint, retries, rate gates,
uploads and downloads.
"""
