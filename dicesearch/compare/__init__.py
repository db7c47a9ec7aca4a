"""Compare trained models seed by seed: verdicts, tables and pictures for ``dicesearch compare``."""
