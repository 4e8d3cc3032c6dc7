"""``python -m mlic``: the ``mlic`` command, for launchers that start modules (``torchrun -m mlic``)."""

from mlic.cli import app

if __name__ == "__main__":
    app(prog_name="mlic")
