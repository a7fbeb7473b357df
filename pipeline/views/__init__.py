"""Presentation: every text and JSON a user reads on the command line is made here.

Operations (``project``, ``run``, ``housekeeping``, ...) return values; the views
turn them into words. ``cli`` calls an operation, hands its value to a view and
prints the result, as DVC's commands render what its repo returns.

- ``plan``: the plan as text (Terraform-like) and as JSON.
- ``progress``: a run's live display, plain lines, JSON events and its summary.
- ``status``: ``status`` and ``verify`` reports.
- ``graph``: the job graph as text, Mermaid or Graphviz dot.
- ``diff``: ``imgspec diff`` as text, JSON and a pull-request comment (markdown).
- ``teams``: what ``lock merge`` and ``init`` did.

The gallery's HTML page is the gallery operation's product and lives with it, in
``pipeline.operations.gallery.page``.
"""
