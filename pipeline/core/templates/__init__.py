"""Prompt templates: Jinja in a sandbox bounded in time and memory.
"""
