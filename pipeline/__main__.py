"""``python -m pipeline`` runs the imgspec command line."""

from pipeline.cli import main

main()
