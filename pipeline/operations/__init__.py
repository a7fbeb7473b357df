"""Operations: each command's work, composing the core and the shell, returning
values that views print.
"""
