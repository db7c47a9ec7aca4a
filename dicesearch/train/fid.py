"""Periodic FID during ``dicesearch train``: a callback on the trainer's eval events."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dicesearch.train.callbacks import Callback, EvalEvent
from dicesearch.train.config import SamplingConfig


class PeriodicFid(Callback):
    """Every eval event: sample ``n`` images from the EMA weights, score them against cached
    reference statistics of ``n`` real images, append the scores to ``metrics.jsonl``.

    Names carry N (``fid_500``): FID is biased by ~1/N, so keep N fixed within a run and
    between runs you compare.
    """

    def __init__(self, n: int, sampling: SamplingConfig, seed: int = 0, report: Callable[[str], None] = print):
        self.n, self.seed, self.report = n, seed, report
        self.sampling = sampling.model_copy(update={"num_samples": n, "seed": seed})
        self.reference = None
        self.history: list[dict] = []

    def on_eval(self, event: EvalEvent) -> None:
        from dicesearch.data.images import ImageView
        from dicesearch.metrics import image_metrics, reference_stats_from_dataset
        from dicesearch.train.sampling import sample_images

        if self.reference is None:
            self.reference = reference_stats_from_dataset(
                ImageView(event.dataset, event.data_spec), self.n, event.dataset.fingerprint, seed=self.seed
            )
        images = sample_images(event.ema, event.spec, event.data_spec, self.sampling, device=event.device)
        scores = {"step": event.step, **image_metrics(images, self.reference, self.n)}
        self.history.append(scores)
        if event.out_dir is not None:
            with (Path(event.out_dir) / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps(scores) + "\n")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if k != "step")
        self.report(f"step {event.step}: {shown}")
