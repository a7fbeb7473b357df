"""The pure core: values and rules, no I/O and no clock.

Load -> validate -> expand -> plan, over frozen dataclasses. Nothing here opens a
file, a socket or a clock; the shell hands it text and time.
"""
