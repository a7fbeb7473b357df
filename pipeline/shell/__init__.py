"""The I/O shell: the HTTP client, the store on disk, and the event loop they run on.
"""
