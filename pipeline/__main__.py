"""``python -m pipeline`` runs the imgspec command line."""

from pipeline.cli.main import main

main()
