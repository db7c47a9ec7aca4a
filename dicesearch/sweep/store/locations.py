"""Where a sweep keeps things: its output folder, its Optuna storage and its MLflow store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicesearch.errors import SpecError
from dicesearch.files import inside
from dicesearch.sweep.space.config import SweepConfig, storage_problem


@dataclass(frozen=True)
class SweepLocations:
    """Where a sweep writes (all relative to the working directory by default)."""

    out_dir: Path  # runs/<study>/: per-trial folders, plots
    storage_url: str  # Optuna storage
    tracking_uri: str  # MLflow tracking store

    @classmethod
    def for_config(cls, config: SweepConfig, out_dir: str | Path | None = None, storage: str | None = None, tracking_uri: str | None = None):
        problem = storage_problem(storage) if storage else None  # the file's own storage: checked when it was read
        if problem:
            raise SpecError(f"--storage: {problem}")
        return cls(
            out_dir=Path(out_dir or inside(Path("runs"), config.resolved_study_name)).absolute(),  # a name never leaves runs/
            storage_url=absolute_sqlite(storage or config.storage or "sqlite:///optuna.db"),
            tracking_uri=absolute_sqlite(tracking_uri or config.tracking_uri or "sqlite:///mlflow.db"),
        )

    def trial_dir(self, number: int) -> Path:
        """``<out>/trial-<n>``: a trial's sample grid and anything else it leaves behind."""
        return self.out_dir / f"trial-{number}"


def absolute_sqlite(url: str) -> str:
    """'sqlite:///x.db' -> 'sqlite:////abs/dir/x.db' (libraries cache stores by URI: a relative
    path would keep pointing at the directory of the first use in a process)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(Path(url[len(prefix):]).absolute())
    return url
