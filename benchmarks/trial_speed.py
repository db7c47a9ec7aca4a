"""A faster trial, same numbers (issue 13): PyTorch's eager path against the fast path, side by side.

    PYTHONPATH=. python benchmarks/trial_speed.py [--space search_spaces/cascade.yaml] [--rounds 3]
        [--steps 20] [--threads 1 2] [--parallelism 2] [--compile] [--no-scoring | --no-training]
    # on a GPU, the DICE preset at its latent size (random 32x32x4 latents), fp16:
    PYTHONPATH=. python benchmarks/trial_speed.py --spec DICE --device cuda --precision fp16 --batch 32 --compile --no-scoring

Training: images/s of the space's base model (or ``--spec``) at the budget's trial batch,
``dicesearch.train.train`` as a trial runs it (data, forward, loss, backward, AdamW, EMA),
each row in fresh spawned processes as trial processes are. Rows: main's eager path
(PyTorch's kernels, AdamW per parameter, the default allocator) and the fast path (the
trial process's settings: ``dicesearch.speed``'s kernels, fused AdamW, freed memory kept)
at each ``--threads``, then the sweep's own setting: ``--parallelism`` one-thread trial
processes training at once, their images/s summed (the old trial was one eager process at
torch's default threads, one per core). Every row runs ``--rounds`` times, the rows taking
turns so that they share the machine's load alike; each round times ``--steps`` steps
after its first (which pays the warm-up, and with ``--compile`` the compilation, reported
apart); the median round is shown, with the CPU time per step. The losses of the steps are
shown as each row's largest relative difference from the first row's.

Sampling + scoring: the base model trained once for the budget's steps; then, for each
path, what ``dicesearch.objective.evaluate`` does after training (sample the EMA, load the
cached reference statistics, Inception features, FID, sFID, KID, precision, recall and the
bootstrap), each path ``--rounds`` times in turns, with the per-process network caches
cleared first (a trial process starts without them). The eager column is main's path:
PyTorch's kernels, the TorchScript Inception and NumPy's BLAS at its own thread count.
Every score is printed for both.

State the machine and its load with any figure (printed, ``uptime``'s load average).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dicesearch.train.callbacks import Callback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402

load_line = reporting.load_line


@dataclass(frozen=True)
class Path_:
    """One row: how each of its ``processes`` trains (all at once when there are several)."""

    name: str
    fast_kernels: bool  # dicesearch.speed's kernels and fused AdamW (the trainer ties them)
    compile: str = "never"
    threads: int = 1
    processes: int = 1
    keep_freed_memory: bool = False  # the trial process's allocator setting (dicesearch.speed.allocator)


class _Clock(Callback):
    """Wall and CPU time at the end of every step."""

    def __init__(self):
        self.marks: list[tuple[float, float]] = []
        self.losses: list[float] = []

    def on_step(self, step: int, loss: float) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))
        self.losses.append(loss)


def _synthetic_latents(spec, count: int, folder: Path):
    """A latent data spec of ``count`` random latents of the spec's shape (the GPU run)."""
    from dicesearch.data import parse_data_spec
    from dicesearch.data.latentfile import write_latent_file

    shape = (count, spec.input.channels, spec.input.resolution, spec.input.resolution)
    path = write_latent_file(folder / "latents.safetensors", torch.randn(shape), torch.arange(count) % max(1, spec.input.num_classes), {})
    return parse_data_spec({"kind": "latents", "path": str(path)}, where="benchmark")


def _train_in_process(spec_dict: dict, data, config, path: Path_, device: str, start, results) -> None:
    """One process of a row: a fresh interpreter, as a trial process is, training ``config``."""
    from dicesearch.data import load_dataset
    from dicesearch.spec import parse_spec
    from dicesearch.speed.allocator import keep_freed_memory
    from dicesearch.train import train

    if path.keep_freed_memory:
        keep_freed_memory()
    torch.set_num_threads(path.threads)
    spec, dataset = parse_spec(spec_dict), load_dataset(data)
    clock = _Clock()
    start.wait()  # the processes of a row train at the same time
    began = time.perf_counter()
    train(spec, data, config.model_copy(update={"fast_kernels": path.fast_kernels, "compile": path.compile}), callbacks=[clock], dataset=dataset, device=device)
    (w0, c0), (w1, c1) = clock.marks[0], clock.marks[-1]
    results.put((w1 - w0, c1 - c0, w0 - began, clock.losses))


def _run_row(spec, data, config, path: Path_, device: str) -> list[tuple[float, float, float, list[float]]]:
    """(wall s, CPU s of the timed steps, first step s, losses) of each of the row's processes."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(path.processes), context.Queue()
    workers = [
        context.Process(target=_train_in_process, args=(spec.model_dump(mode="json"), data, config, path, device, start, results))
        for _ in range(path.processes)
    ]
    for worker in workers:
        worker.start()
    out = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode:
            raise SystemExit(f"benchmark: a training process of {path.name!r} exited with status {worker.exitcode}")
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n > 1)}"


def training_paths(threads: list[int], parallelism: int, compile_row: bool) -> list[Path_]:
    """Main's eager path and the fast path at each thread count, then the sweep's trial processes."""
    paths = [Path_(f"eager, {_plural(t, 'thread')}", False, threads=t) for t in threads]
    paths += [Path_(f"fast, {_plural(t, 'thread')}", True, threads=t, keep_freed_memory=True) for t in threads]
    if parallelism > 1:
        paths.append(Path_(f"fast, {parallelism} trial processes x 1 thread (the sweep)", True, processes=parallelism, keep_freed_memory=True))
    if compile_row:
        paths.append(Path_(f"fast + compile, {_plural(threads[0], 'thread')}", True, "always", threads[0], keep_freed_memory=True))
    return paths


def training_table(spec, data, batch: int, args) -> None:
    from dicesearch.train import TrainConfig

    paths = training_paths(args.threads, args.parallelism, args.compile)
    config = TrainConfig(steps=args.steps + 1, batch_size=batch, lr=args.lr, seed=args.seed, precision=args.precision, checkpoint_every=10**9)
    rounds: dict[str, list[tuple[float, float]]] = {p.name: [] for p in paths}  # (images/s, CPU s per step per process)
    first_step: dict[str, float] = {}
    losses: dict[str, list[float]] = {}
    before = load_line()
    for r in range(args.rounds):
        for p in paths:
            runs = _run_row(spec, data, config, p, args.device)
            rate = sum(batch * args.steps / wall for wall, _, _, _ in runs)  # images/s of all the row's processes together
            rounds[p.name].append((rate, statistics.mean(cpu for _, cpu, _, _ in runs) / args.steps))
            first_step.setdefault(p.name, max(first for _, _, first, _ in runs))
            losses[p.name] = runs[0][3]
            print(f"  round {r + 1}/{args.rounds} {p.name}: {rate:.0f} images/s", flush=True)
    rate = {p.name: statistics.median(images for images, _ in rounds[p.name]) for p in paths}
    old = max((p for p in paths if not p.fast_kernels), key=lambda p: p.threads)  # main's trial: eager at torch's default threads
    title = f"training {spec.name} ({_params(spec):,} parameters), batch {batch}, {args.steps} timed steps x {args.rounds} rounds, {args.device}, {args.precision}"
    headers = ["path", "images/s", "x eager, same threads", f"x {old.name}", "CPU s/step", "first step s", "max loss diff (rel.)"]
    rows = []
    reference = losses[paths[0].name]
    eager_at = {p.threads: rate[p.name] for p in paths if not p.fast_kernels and p.processes == 1}
    for p in paths:
        same = eager_at.get(p.threads * p.processes)  # the eager process with as many threads as the row has in all
        diff = max(abs(a - b) / abs(b) for a, b in zip(losses[p.name], reference))
        rows.append([
            p.name, f"{rate[p.name]:.0f}", "" if same is None else f"{rate[p.name] / same:.2f}", f"{rate[p.name] / rate[old.name]:.2f}",
            f"{statistics.median(cpu for _, cpu in rounds[p.name]):.3f}", f"{first_step[p.name]:.1f}", f"{diff:.1e}",
        ])  # fmt: skip
    print(f"\n{title}\n\n{reporting.markdown_table(headers, rows)}\n")
    print(
        f"each row in fresh processes (spawned, as trial processes are); the sweep row's {args.parallelism} processes train at once "
        f"and its images/s is theirs together. before: {before}; after: {load_line()}"
    )


def _params(spec) -> int:
    from dicesearch.analysis.flops import static_metrics

    return int(static_metrics(spec)["params"])


def _clear_network_caches() -> None:
    """What a fresh trial process has: no loaded Inception, no eager copy of it."""
    from dicesearch.metrics.inception import forget_loaded_networks
    from dicesearch.metrics.inception_eager import eager_inception

    forget_loaded_networks()
    eager_inception.cache_clear()


@contextlib.contextmanager
def _blas_threads(follow_torch: bool):
    """The eager column runs as main did: NumPy's BLAS at its own thread count (one per core)."""
    from dicesearch.metrics import evaluate

    if follow_torch:
        yield
        return
    follow = evaluate.blas_threads_like_torch
    evaluate.blas_threads_like_torch = contextlib.nullcontext
    try:
        yield
    finally:
        evaluate.blas_threads_like_torch = follow


def scoring_table(spec, data, budget, args) -> None:
    from dicesearch.data import load_dataset
    from dicesearch.data.images import ImageView
    from dicesearch.metrics import image_scores, reference_stats_from_dataset
    from dicesearch.train import SamplingConfig, TrainConfig, train
    from dicesearch.train.sampling import sample_images

    torch.set_num_threads(args.threads[0])  # what a trial process samples and scores with (budget.threads)
    dataset = load_dataset(data)
    n, seed = budget.fid_samples, args.seed
    steps = args.train_steps or budget.train_steps
    print(f"training the base model for {steps} steps (fast kernels) ...", flush=True)
    config = TrainConfig(steps=steps, batch_size=budget.batch_size, lr=budget.lr, warmup_steps=budget.warmup_steps, ema_decay=budget.ema_decay, seed=seed)
    ema = train(spec, data, config, dataset=dataset, device=args.device).ema
    reference_stats_from_dataset(ImageView(dataset, data), n, dataset.fingerprint, seed=seed, progress=False)  # cached once, as for every sweep
    results: dict[bool, list[tuple[float, float, float, dict]]] = {False: [], True: []}
    before = load_line()
    for r in range(args.rounds):
        for fast in (False, True):
            _clear_network_caches()
            with _blas_threads(follow_torch=fast):
                start, cpu = time.perf_counter(), time.process_time()
                sampling = SamplingConfig(sampler=budget.sampler, steps=budget.sampling_steps, num_samples=n, seed=seed, batch_size=min(n, 250), fast_kernels=fast)
                images = sample_images(ema, spec, data, sampling, device=args.device)
                sampled = time.perf_counter()
                reference = reference_stats_from_dataset(ImageView(dataset, data), n, dataset.fingerprint, seed=seed, progress=False, fast=fast)
                scores = image_scores(images, reference, n, seed=seed, progress=False, fast=fast)
                end = time.perf_counter()
            results[fast].append((sampled - start, end - sampled, time.process_time() - cpu, scores))
            print(f"  round {r + 1}/{args.rounds} {'fast' if fast else 'eager'}: {end - start:.1f} s", flush=True)

    def median(fast: bool, i: int) -> float:
        return statistics.median(row[i] for row in results[fast])

    title = f"sampling + scoring one trial: {n} images x {budget.sampling_steps} {budget.sampler} steps, {args.rounds} rounds, {args.device}, {torch.get_num_threads()} torch thread(s)"
    rows = []
    for label, i in (("sampling s", 0), ("reference + Inception + scores s", 1), ("CPU s (both)", 2)):
        rows.append([label, f"{median(False, i):.1f}", f"{median(True, i):.1f}", f"{median(False, i) / median(True, i):.2f}"])
    total_eager, total_fast = median(False, 0) + median(False, 1), median(True, 0) + median(True, 1)
    rows.append(["sampling + scoring s", f"{total_eager:.1f}", f"{total_fast:.1f}", f"{total_eager / total_fast:.2f}"])
    eager_scores, fast_scores = results[False][-1][3], results[True][-1][3]
    for name in sorted(eager_scores):
        a, b = eager_scores[name], fast_scores[name]
        rows.append([name, f"{a:.6g}", f"{b:.6g}", f"diff {abs(a - b) / max(abs(a), 1e-12):.1e}"])
    print(f"\n{title}\n\n{reporting.markdown_table(['', 'eager (main)', 'fast', 'x eager'], rows)}\n")
    print(f"before: {before}; after: {load_line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/cascade.yaml", help="the base model, data and budget of this search space")
    parser.add_argument("--spec", help="a preset or spec file instead of the space's base model (random latents if it takes latents)")
    parser.add_argument("--batch", type=int, help="training batch (default: the budget's)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch intra-op threads; several give rows for each")
    parser.add_argument("--parallelism", type=int, help="trial processes of the sweep row (default: the space's parallelism; 1: no such row)")
    parser.add_argument("--compile", action="store_true", help="add a fast kernels + torch.compile row (its first step holds the compilation)")
    parser.add_argument("--no-scoring", action="store_true", help="skip the sampling + scoring table")
    parser.add_argument("--no-training", action="store_true", help="skip the training table")
    parser.add_argument("--train-steps", type=int, help="steps the model is trained before sampling (default: the budget's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()

    from dicesearch.spec import load_spec, parse_spec
    from dicesearch.sweep.space.search_space import load_search_space

    space = load_search_space(args.space)
    budget, data = space.config.budget, space.config.data
    spec = load_spec(args.spec) if args.spec else parse_spec(space.base)
    args.seed, args.lr = space.config.seed, budget.lr
    args.parallelism = args.parallelism or (1 if args.spec else space.config.parallelism)
    print(reporting.machine_line(args.device) + " (other jobs may share this machine)")
    with tempfile.TemporaryDirectory() as scratch:
        if args.spec and spec.input.channels != 1:
            data = _synthetic_latents(spec, max(256, args.batch or budget.batch_size), Path(scratch))
        if not args.no_training:
            training_table(spec, data, args.batch or budget.batch_size, args)
    if not args.no_scoring and not args.spec:
        scoring_table(spec, data, budget, args)


if __name__ == "__main__":
    main()
