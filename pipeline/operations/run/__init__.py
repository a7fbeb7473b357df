"""``run``: execute a plan against the API on an event loop, and what it reports.
"""
