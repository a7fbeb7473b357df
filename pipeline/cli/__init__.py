"""The ``imgspec`` command line: parse, call the operations, print with the views.
"""
