"""``python -m tessera`` runs the CLI."""

from tessera.app.cli.main import run

run()
