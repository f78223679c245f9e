"""The command line: ``kdna train / eval / metrics / demo`` (:mod:`kdna.cli.main`), the
metrics command (:mod:`kdna.cli.metrics`) and the offline demo (:mod:`kdna.cli.demo`)."""

from kdna.cli.main import build_model, main, parser

__all__ = ["build_model", "main", "parser"]
