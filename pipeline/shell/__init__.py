"""The I/O shell: the HTTP client and the store on disk.
"""
