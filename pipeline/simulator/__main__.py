"""``python -m pipeline.simulator``: the ``imgspec simulator`` command on its own."""

import sys

import click

from pipeline.errors import ImgspecError
from pipeline.simulator.cli import simulator


def main() -> None:
    """Run the command, reporting errors as the imgspec CLI does: a message, never a traceback."""
    try:
        simulator.main(prog_name="python -m pipeline.simulator", standalone_mode=False)
    except ImgspecError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
