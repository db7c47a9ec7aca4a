"""A faster sweep: each lever of issue 22 beside its baseline, measured in the same run, and what it changes in the scores.

    PYTHONPATH=. python benchmarks/sweep_speed.py [--space search_spaces/cascade.yaml] [--rounds 3]
        [--only precision inception winograd cores chunks sampling native merge_norm start] [--tail-scores]

Every table takes its rows in turns (round 1 of every row, then round 2, ...), so that the
machine's load falls on each alike, and shows the median round. The load average and the
cores idle over the run (``/proc/stat``) are printed with every table: the idle-core rows
mean something only where a core is free.

* ``precision``: a training step of the space's base model at the budget's batch, one thread,
  fast kernels, fp32 against bf16 autocast (``budget.precision``); the losses' largest relative
  difference. What bf16 does to full-budget scores: ``benchmarks/precision_scores.py``.
* ``inception``: Inception features of generated-like images at one thread, fp32 against bf16
  autocast, and how far the pool features move (the issue's bar: 1e-4 relative).
* ``winograd``: the FID Inception's convolutions that Winograd's algorithms take (3x3, 5x5, 1x7,
  7x1, 1x3, 3x1) at one thread, oneDNN's direct convolution against Winograd's on native
  kernels (``dicesearch.ops.winograd``): each layer shape at a micro-batch of 8 with both
  paths' largest relative difference from float64; then the whole network, images per second both ways, the pool and spatial
  features' largest relative difference from the network file's own (TorchScript) forward,
  and the FID of the generated-like images against the digits both ways.
* ``cores``: what a trial left alone on the machine gains from the core an idle worker leaves
  (``dicesearch.speed.cores``): training steps at 1 and 2 intra-op threads, and one scoring as
  a trial does it (sample 128 images x 50 DDIM steps, reference statistics from the cache,
  Inception features, every score) at 1 and 2 threads, with every score of both.
  ``--tail-scores`` adds what two threads change in a trial's score: the default sweep's pick
  trained 400 steps, then on to 1600 at one thread and at two, both scored.
* ``chunks``: two threads for one trial, training steps of the base model and of the default
  sweep's pick, each row in a process forked as a trial's is: torch's intra-op threads (the
  ops split two ways, which wait for each other at every op), or the batch in two chunks on
  two worker threads of one intra-op thread each (``TrainConfig.thread_chunks``, what a trial
  process does with an idle worker's core, ``dicesearch.speed.chunks``) with the step's other
  ops on two intra-op threads (the version before) or at one thread (now), beside one thread;
  the losses' largest relative difference.
* ``sampling``: two threads for a trial's sampling two ways, ``fid_samples`` images x
  ``sampling_steps`` of the budget's sampler, base model and the default sweep's pick (weights
  moved off their initialisation): torch's intra-op threads, or the batch in two parts on two
  worker threads of one intra-op thread each (``dicesearch.train.sampling``), beside one thread;
  the samples' largest difference from one thread's.
* ``native``: the depthwise convolutions at one thread, PyTorch's oneDNN path (with the
  channel repeat and the flipped-filter input gradient of ``dicesearch.ops.depthwise``)
  against the native kernels (``dicesearch/native/depthwise.c``): forward, input gradient
  and weight gradient at the default space's shapes, with each result's largest relative
  difference; then training steps of the base model and of the pick at one thread, the
  native kernels off and on, and the losses' largest relative difference.
* ``merge_norm``: the DICE block's merge of its convolution pair and the conditioned
  LayerNorm after it at one thread, PyTorch's operations (``ops.merge_norm.merged_norm_reference``)
  against the fused native op (``dicesearch/native/merge_norm.c``): forward and backward at
  the default space's shapes, with the largest relative difference of the output and every
  gradient; then training steps of the base model and of the pick at one thread (depthwise
  convolutions native in both), the fused op off and on, and the losses' largest relative
  difference.
* ``start``: a trial process from start to its imports done (torch, diffusers, the objective,
  the metrics), spawned as before or forked from the preloading server (``process.PRELOAD``):
  wall seconds and the child's CPU seconds.
* ``reference``: a sweep's first two trials on a machine that has never scored its data (an
  empty FID cache): two trial-like processes at once, each training the base model to the
  first rung at one thread and scoring it, as the default sweep's first trials do. Each trial
  computing the reference statistics itself (before), the cache's lock (one computes, the
  other waits), and the statistics computed beside them by the process a sweep starts
  (``dicesearch.sweep.lifecycle.reference_ahead``), the trials asking for them before their
  images' features (as before) or after them (now), the trials started 2 s after the
  sweep's checks as in the sweep (its stores and first gates): the wall until both are scored,
  each trial's scoring seconds, and whether their scores are the same bits every way.
* ``collector``: a sweep's start (the imports, loading and checking the default space, the
  stores opened) in a fresh interpreter, with Python's cyclic garbage collector on as before
  or off until the stores are open, then frozen (``dicesearch.speed.collector``, now); and the
  interpreter's teardown after its last atexit function, without and with every object frozen
  first; and the preloading server's imports and FID network (``process.PRELOAD``), the
  collector on or off until they are done (``preload_begins``): seconds, the rows taking turns.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/reporting.py, however this file is loaded
import reporting  # noqa: E402

LEVERS = ("precision", "inception", "winograd", "cores", "chunks", "sampling", "native", "merge_norm", "start", "reference", "collector")


class _Idle:
    """Cores idle between ``start()`` and ``stop()`` (None where /proc/stat is missing)."""

    def __enter__(self):
        from dicesearch.speed.cores import IdleCores

        self.cores, self.before = IdleCores(), reporting.load_line()
        return self

    def __exit__(self, *exc):
        self.idle = self.cores()

    def line(self) -> str:
        idle = "n/a" if self.idle is None else f"{self.idle:.2f} of {len(os.sched_getaffinity(0))}"
        return f"before: {self.before}; after: {reporting.load_line()}; cores idle over the table: {idle}"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _space(args):
    from dicesearch.spec import parse_spec
    from dicesearch.sweep.space.search_space import load_search_space

    space = load_search_space(args.space)
    return space, parse_spec(space.base), space.config.data, space.config.budget


class _Clock:
    def __init__(self, threads_after_first: int | None = None):
        self.marks, self.losses = [], []
        self.threads_after_first = threads_after_first

    # the trainer's callback protocol (only what is used)
    def on_train_start(self, start): ...
    def on_log(self, event): ...
    def on_checkpoint(self, step, path): ...
    def on_eval(self, event): ...
    def on_train_end(self, result): ...

    def on_step(self, step, loss):
        self.marks.append(time.perf_counter())
        self.losses.append(loss)
        if step == 1 and self.threads_after_first is not None:  # as a trial process takes an idle worker's core at a report
            torch.set_num_threads(self.threads_after_first)


def _train_steps(spec, data, dataset, budget, steps: int, threads_after_first: int | None = None, **config):
    """(seconds per step over ``steps`` steps after the first, losses, result); the steps after
    the first at ``threads_after_first`` torch threads where given."""
    from dicesearch.train import TrainConfig, train

    clock = _Clock(threads_after_first)
    base = TrainConfig(steps=steps + 1, batch_size=budget.batch_size, lr=budget.lr, warmup_steps=budget.warmup_steps, seed=42, checkpoint_every=10**9)
    result = train(spec, data, base.model_copy(update=config), callbacks=[clock], dataset=dataset, device="cpu")
    return (clock.marks[-1] - clock.marks[0]) / steps, clock.losses, result


def precision_table(args) -> None:
    from dicesearch.data import load_dataset

    space, spec, data, budget = _space(args)
    dataset = load_dataset(data)
    torch.set_num_threads(1)
    rows = {p: [] for p in ("fp32", "bf16")}
    losses = {}
    with _Idle() as idle:
        for _ in range(args.rounds):
            for precision in rows:
                seconds, losses[precision], _ = _train_steps(spec, data, dataset, budget, args.steps, precision=precision)
                rows[precision].append(seconds)
    fp32 = _median(rows["fp32"])
    diff = max(abs(a - b) / abs(a) for a, b in zip(losses["fp32"], losses["bf16"]))
    table = [
        [p, f"{_median(v):.4f}", f"{budget.batch_size / _median(v):.0f}", f"{_median(v) / fp32:.2f}", "0" if p == "fp32" else f"{diff:.1e}"]
        for p, v in rows.items()
    ]
    print(f"\ntraining precision: {spec.name}, batch {budget.batch_size}, {args.steps} timed steps x {args.rounds} rounds, 1 thread, fast kernels\n")
    print(reporting.markdown_table(["precision", "s/step", "images/s", "x fp32 time", "max loss diff (rel.)"], table))
    print(idle.line())


def _generated_like(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 16, 16, generator=g) * 2 - 1  # (n, 1, 16, 16) in [-1, 1], the digits' shape


def inception_table(args) -> None:
    from dicesearch.metrics.features import to_inception_input, to_uint8
    from dicesearch.metrics.inception import load_inception
    from dicesearch.metrics.inception_eager import eager_inception

    torch.set_num_threads(1)
    eager = eager_inception(load_inception())
    x = to_inception_input(to_uint8(_generated_like(args.images)))  # (n, 3, 299, 299)
    rates, pools = {"fp32": [], "bf16 autocast": []}, {}
    with _Idle() as idle, torch.inference_mode():
        eager(x[:8], spatial=True)
        for _ in range(args.rounds):
            for name in rates:
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name != "fp32"):
                    pool, _ = eager(x, spatial=True)
                rates[name].append(len(x) / (time.perf_counter() - start))
                pools[name] = pool.float()
    ref = pools["fp32"]
    rel = float((pools["bf16 autocast"] - ref).abs().max() / ref.abs().max())
    table = [
        ["fp32 (eager, channels-last)", f"{_median(rates['fp32']):.2f}", "1.00", "0", "yes"],
        ["bf16 autocast", f"{_median(rates['bf16 autocast']):.2f}", f"{_median(rates['bf16 autocast']) / _median(rates['fp32']):.2f}", f"{rel:.1e}", "yes" if rel <= 1e-4 else "no"],
    ]
    print(f"\nInception features: {len(x)} images (16x16 grayscale, to 299x299), {args.rounds} rounds, 1 thread\n")
    print(reporting.markdown_table(["network", "images/s", "x fp32", "pool features max diff (rel.)", "within 1e-4"], table))
    print(idle.line())


def winograd_table(args) -> None:
    """The Inception's convolutions that Winograd's algorithms take, direct against Winograd: per layer shape, then the whole network."""
    from dicesearch import native
    from dicesearch.data import load_dataset
    from dicesearch.metrics import inception_eager
    from dicesearch.metrics.features import to_inception_input, to_uint8
    from dicesearch.metrics.frechet import frechet_distance_to_samples, gaussian_stats
    from dicesearch.metrics.inception import load_inception, run_inception
    from dicesearch.ops import winograd

    if winograd.native_kernels() is None:
        print(f"\nnative kernels unavailable: {native.why_unavailable('winograd')}")
        return
    torch.set_num_threads(1)
    network = load_inception()
    eager = inception_eager.eager_inception(network)
    layers, counts = {}, {}  # (O, I, kh, kw, grid, padding) -> a folded conv of that shape, and how many

    def record(conv, h):
        if conv.winograd is not None:
            key = (*conv.weight.shape, h.shape[2], tuple(conv.padding))
            layers.setdefault(key, conv)
            counts[key] = counts.get(key, 0) + 1

    x = to_inception_input(to_uint8(_generated_like(args.images)))  # (n, 3, 299, 299)
    call = inception_eager._FoldedConv.__call__
    with torch.inference_mode():
        inception_eager._FoldedConv.__call__ = lambda conv, h: (record(conv, h), call(conv, h))[1]
        try:
            eager(x[:1], spatial=False)
        finally:
            inception_eager._FoldedConv.__call__ = call
    rows, total = [], {"direct": 0.0, "Winograd": 0.0}
    with _Idle() as idle, torch.inference_mode():
        for key, conv in sorted(layers.items(), key=lambda kv: -counts[kv[0]] * kv[0][0] * kv[0][1] * kv[0][2] * kv[0][3] * kv[0][4] ** 2):
            o, i, kh, kw, grid, padding = key
            g = torch.Generator().manual_seed(0)
            inputs = torch.randn(8, i, grid, grid, generator=g).relu().contiguous(memory_format=torch.channels_last)
            want = winograd.conv_relu_reference(inputs.double(), conv.weight.double(), conv.bias.double(), list(padding))
            paths = {"direct": lambda: winograd.conv_relu_reference(inputs, conv.weight, conv.bias, list(padding)),
                     "Winograd": lambda: winograd.conv_relu(inputs, conv.winograd, conv.bias)}  # fmt: skip
            seconds = {name: _seconds(path, args.rounds * 3) for name, path in paths.items()}
            diffs = {name: float((path().double() - want).abs().max() / want.abs().max()) for name, path in paths.items()}
            for name in total:
                total[name] += counts[key] * seconds[name]
            (mh, mw), n_points = conv.winograd.outputs, conv.winograd.filters.shape[0]
            rows.append([f"{o} x {i}, {kh}x{kw}, {grid}x{grid}", f"F({mh}x{mw}, {kh}x{kw}), {n_points} points", str(counts[key]),
                         f"{seconds['direct'] * 1e3:.2f}", f"{seconds['Winograd'] * 1e3:.2f}", f"{seconds['direct'] / seconds['Winograd']:.2f}",
                         f"{diffs['direct']:.1e}", f"{diffs['Winograd']:.1e}"])  # fmt: skip
    rows.append(["all of them, each as often as in the network", "", "", f"{total['direct'] * 1e3:.1f}", f"{total['Winograd'] * 1e3:.1f}",
                 f"{total['direct'] / total['Winograd']:.2f}", "", ""])  # fmt: skip
    print(f"\nthe FID Inception's convolutions taken by Winograd's algorithms (with bias and ReLU) at a micro-batch of 8, one thread, "
          f"{args.rounds * 3} rounds (median)\n")  # fmt: skip
    print(reporting.markdown_table(["layer (out x in channels, kernel, grid)", "algorithm", "in the network", "direct ms", "Winograd ms", "x direct",
                                    "direct diff from float64", "Winograd diff from float64"], rows))  # fmt: skip
    print(idle.line())

    data = _space(args)[2]
    dataset = load_dataset(data)
    real_x = to_inception_input(to_uint8(torch.stack([dataset[k][0] for k in range(len(x))])))  # (n, 3, 299, 299) digits
    one_by_one = inception_eager.EagerInception(network, open_together=False)
    variants = {  # name -> (network, whether its Winograd plans are put aside)
        "direct, the 1x1 one by one (the version before)": (one_by_one, True),
        "Winograd, the 1x1 one by one": (one_by_one, False),
        "Winograd, each block's opening 1x1 together (now)": (eager, False),
    }
    rates, feats = {name: [] for name in variants}, {}
    with _Idle() as idle, torch.inference_mode():
        want_pool, want_spatial = run_inception(network, x, spatial=True)
        for _ in range(args.rounds):
            for name, (net, direct) in variants.items():
                with _DirectConvs(_folded_convs(net) if direct else ()):
                    start = time.perf_counter()
                    pool, spatial = net(x, spatial=True)
                    rates[name].append(len(x) / (time.perf_counter() - start))
                    real_pool, _ = net(real_x, spatial=False)
                feats[name] = (pool, spatial, real_pool)
    table, first = [], _median(rates[next(iter(variants))])
    for name in variants:
        pool, spatial, real_pool = feats[name]
        fid = frechet_distance_to_samples(pool.double().numpy(), gaussian_stats(real_pool.double().numpy()))
        table.append([name, f"{_median(rates[name]):.2f}", f"{_median(rates[name]) / first:.2f}",
                      f"{float((pool - want_pool).abs().max() / want_pool.abs().max()):.1e}",
                      f"{float((spatial - want_spatial).abs().max() / want_spatial.abs().max()):.1e}", f"{fid:.6f}"])  # fmt: skip
    print(f"\nthe FID Inception: {len(x)} generated-like images (16x16, to 299x299), {args.rounds} rounds, one thread; FID against {len(x)} digits\n")
    print(reporting.markdown_table(["network", "images/s", "x the version before", "pool diff from the file's forward", "spatial diff", f"FID ({len(x)} vs {len(x)})"], table))
    print(idle.line())


def _folded_convs(network) -> list:
    """Every folded convolution of an eager Inception."""
    from dicesearch.metrics import inception_eager

    found = []

    def visit(part):
        if isinstance(part, inception_eager._FoldedConv):
            found.append(part)
        elif isinstance(part, list):
            for _, child in part:
                visit(child)
        elif isinstance(part, inception_eager._MixedBlock):
            for _, rest in part.branches:
                visit(rest)
            if part.opening is not None:
                found.extend(part.opening.convs)
        elif isinstance(part, inception_eager._Mixed9Or10):
            found.extend(v for v in part.p.values() if isinstance(v, inception_eager._FoldedConv))

    for _, part in network.layers:
        visit(part)
    return found


class _DirectConvs:
    """Within the block, the given folded convolutions take the direct path (their Winograd plans put aside)."""

    def __init__(self, convs):
        self.convs, self.kept = list(convs), []

    def __enter__(self):
        self.kept = [conv.winograd for conv in self.convs]
        for conv in self.convs:
            conv.winograd = None

    def __exit__(self, *exc):
        for conv, plan in zip(self.convs, self.kept):
            conv.winograd = plan


def _one_scoring(ema, spec, data, dataset, budget, seed: int) -> tuple[float, float, dict]:
    """(sampling s, reference + features + scores s, scores) as a trial's scoring does it."""
    from dicesearch.data.images import ImageView
    from dicesearch.metrics import image_scores, reference_stats_from_dataset
    from dicesearch.train import SamplingConfig
    from dicesearch.train.sampling import sample_images

    n = budget.fid_samples
    start = time.perf_counter()
    sampling = SamplingConfig(sampler=budget.sampler, steps=budget.sampling_steps, num_samples=n, seed=seed, batch_size=min(n, 250))
    images = sample_images(ema, spec, data, sampling, device="cpu")
    sampled = time.perf_counter()
    reference = reference_stats_from_dataset(ImageView(dataset, data), n, dataset.fingerprint, seed=seed, progress=False)
    scores = image_scores(images, reference, n, seed=seed, progress=False)
    return sampled - start, time.perf_counter() - sampled, scores


def cores_table(args) -> None:
    from dicesearch.data import load_dataset
    from dicesearch.data.images import ImageView
    from dicesearch.metrics import reference_stats_from_dataset

    space, spec, data, budget = _space(args)
    dataset = load_dataset(data)
    torch.set_num_threads(1)
    print(f"\ntraining {spec.name} for the scoring rows ({args.train_steps} steps) ...", flush=True)
    _, _, trained = _train_steps(spec, data, dataset, budget, args.train_steps)
    reference_stats_from_dataset(ImageView(dataset, data), budget.fid_samples, dataset.fingerprint, seed=42, progress=False)  # cached, as in a sweep
    step = {1: [], 2: []}
    sample, score, scores, losses = {1: [], 2: []}, {1: [], 2: []}, {}, {}
    free = []  # cores idle while the one-thread rows ran: the core the two-thread rows take
    with _Idle() as idle:
        for r in range(args.rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                with _Idle() as during:
                    seconds, losses[threads], _ = _train_steps(spec, data, dataset, budget, args.steps)
                    sampled, scored, scores[threads] = _one_scoring(trained.ema, spec, data, dataset, budget, 42)
                step[threads].append(seconds)
                sample[threads].append(sampled)
                score[threads].append(scored)
                if threads == 1:
                    free.append(during.idle)
            print(f"  round {r + 1}: 1 thread {step[1][-1]:.4f} s/step, {sample[1][-1] + score[1][-1]:.1f} s/scoring; 2 threads {step[2][-1]:.4f} s/step, "
                  f"{sample[2][-1] + score[2][-1]:.1f} s/scoring; cores idle beside the 1-thread rows {free[-1] if free[-1] is not None else float('nan'):.2f}", flush=True)
    torch.set_num_threads(1)
    same_losses = losses[1] == losses[2]
    loss_diff = max(abs(a - b) / abs(a) for a, b in zip(losses[1], losses[2]))
    total = {t: _median(sample[t]) + _median(score[t]) for t in (1, 2)}
    rows = [
        ["training s/step", f"{_median(step[1]):.4f}", f"{_median(step[2]):.4f}", f"{_median(step[1]) / _median(step[2]):.2f}",
         "same bits" if same_losses else f"losses rel. diff {loss_diff:.1e}"],
        ["sampling s (128 x 50 DDIM)", f"{_median(sample[1]):.2f}", f"{_median(sample[2]):.2f}", f"{_median(sample[1]) / _median(sample[2]):.2f}", ""],
        ["reference + Inception + scores s", f"{_median(score[1]):.2f}", f"{_median(score[2]):.2f}", f"{_median(score[1]) / _median(score[2]):.2f}", ""],
        ["seconds per scoring", f"{total[1]:.2f}", f"{total[2]:.2f}", f"{total[1] / total[2]:.2f}", ""],
        ["Inception images/s (in the scoring)", f"{budget.fid_samples / _median(score[1]):.1f}", f"{budget.fid_samples / _median(score[2]):.1f}", "", ""],
    ]  # fmt: skip
    for name in sorted(scores[1]):
        a, b = scores[1][name], scores[2][name]
        rows.append([name, f"{a:.6g}", f"{b:.6g}", "", "same bits" if a == b else f"rel. diff {abs(a - b) / max(abs(a), 1e-12):.1e}"])
    print(f"\nan idle core for a trial left alone: {spec.name}, batch {budget.batch_size}, {args.steps} timed steps; one scoring of the model "
          f"trained {args.train_steps} steps; {args.rounds} rounds\n")
    print(reporting.markdown_table(["", "1 thread", "2 threads", "x", "numbers"], rows))
    print(idle.line())
    if args.tail_scores:
        tail_scores(args, space, data, dataset, budget)


def tail_scores(args, space, data, dataset, budget) -> None:
    """The default sweep's pick trained to 400 steps, then to 1600 at one thread and at two."""
    import shutil
    import tempfile
    from pathlib import Path

    from dicesearch.train import TrainConfig, train

    values = PICK
    spec = space.apply(values)
    config = TrainConfig(
        steps=400, batch_size=budget.batch_size, lr=budget.lr, warmup_steps=budget.warmup_steps, ema_decay=budget.ema_decay, seed=42,
        checkpoint_every=10**9, keep_checkpoints=1,
    )  # fmt: skip
    results = {}
    with _Idle() as idle, tempfile.TemporaryDirectory() as scratch:
        torch.set_num_threads(1)
        train(spec, data, config, out_dir=Path(scratch) / "run", dataset=dataset, device="cpu")
        for threads in (1, 2):
            run = Path(scratch) / f"run-{threads}"
            shutil.copytree(Path(scratch) / "run", run)
            torch.set_num_threads(threads)
            start = time.perf_counter()
            ema = train(spec, data, config.model_copy(update={"steps": budget.train_steps}), out_dir=run, resume=True, dataset=dataset, device="cpu").ema
            seconds = time.perf_counter() - start
            torch.set_num_threads(1)
            _, _, scores = _one_scoring(ema, spec, data, dataset, budget, 42)
            results[threads] = (seconds, scores)
    key = f"fid_{budget.fid_samples}"
    rows = [[f"{t} thread{'s' * (t > 1)}", f"{s:.0f}", f"{sc[key]:.4f}"] for t, (s, sc) in results.items()]
    print(f"\nthe tail at two threads: the default sweep's pick ({', '.join(f'{k}={v}' for k, v in values.items())}), 400 -> {budget.train_steps} steps\n")
    print(reporting.markdown_table(["400 -> 1600 steps on", "training s", key], rows))
    print(f"difference {results[2][1][key] - results[1][1][key]:+.4f} (the pick's seed-to-seed sd: 3.5); {idle.line()}")


def _in_a_trial_process(function, *args):
    """``function(*args)`` in a process forked from the preloading server, as a trial's is
    (``dicesearch.sweep.lifecycle.process.trial_context``): its own threads only."""
    from dicesearch.sweep.lifecycle.process import trial_context

    context = trial_context()
    here, there = context.Pipe()
    process = context.Process(target=_send_result, args=(there, function, args))
    process.start()
    there.close()
    result = here.recv()
    process.join()
    return result


def _send_result(conn, function, args) -> None:
    conn.send(function(*args))
    conn.close()


def _chunks_row(args, model: str, threads: int, chunking: dict) -> tuple[float, list[float]]:
    """A trial process's training steps of ``model`` (base or pick): the first at one thread, as
    a trial starts, the timed ones at ``threads``, as after the sweep offered it a core."""
    import contextlib

    from dicesearch.data import load_dataset
    from dicesearch.train import trainer

    torch.set_num_threads(1)
    config = {key: value for key, value in chunking.items() if key != "step_on_threads"}  # the row's own dict stays as it is
    if chunking.get("step_on_threads"):  # the version before: only the chunks at one intra-op thread
        trainer.one_intra_op_thread = contextlib.nullcontext
    space, base, data, budget = _space(args)
    spec = base if model == "base" else space.apply(PICK)
    seconds, losses, _ = _train_steps(spec, data, load_dataset(data), budget, args.steps, threads_after_first=threads, **config)
    return seconds, losses


def chunks_table(args) -> None:
    """Two threads for one trial: torch's intra-op threads, or two chunks of the batch on two
    worker threads (``TrainConfig.thread_chunks``, ``dicesearch.speed.chunks``) with the step's
    other ops (optimiser, EMA) on two intra-op threads as before or at one thread as now, beside
    one thread. Each row in its own process forked as a trial's is, its first step at one
    thread and the timed ones after it at the row's."""
    space, base, data, budget = _space(args)
    models = {"base": base, "pick": space.apply(PICK)}
    ways = {
        "1 thread": (1, {}),
        "2 intra-op threads": (2, {}),
        "2 chunks, the step's other ops on 2 intra-op threads (before)": (2, {"thread_chunks": True, "step_on_threads": True}),
        "2 chunks (2 worker threads), the step at 1 thread": (2, {"thread_chunks": True}),
    }  # fmt: skip
    step = {(m, w): [] for m in models for w in ways}
    losses = {}
    with _Idle() as idle:
        for r in range(args.rounds):
            for m, spec in models.items():
                for w, (threads, chunking) in ways.items():
                    seconds, losses[m, w] = _in_a_trial_process(_chunks_row, args, m, threads, chunking)
                    step[m, w].append(seconds)
            print(f"  round {r + 1}: " + "; ".join(f"{m} {w} {step[m, w][-1]:.4f} s/step" for m in models for w in ways), flush=True)
    torch.set_num_threads(1)
    rows = []
    for m, spec in models.items():
        one = _median(step[m, "1 thread"])
        for w in ways:
            diff = max(abs(a - b) / abs(b) for a, b in zip(losses[m, w], losses[m, "1 thread"]))
            rows.append([f"{m} ({spec.name if m == 'base' else 'the pick'})", w, f"{_median(step[m, w]):.4f}", f"{one / _median(step[m, w]):.2f}",
                         "same bits" if diff == 0 else f"{diff:.1e}"])  # fmt: skip
    print(f"\ntwo threads for one trial: training steps at batch {budget.batch_size}, {args.steps} timed steps x {args.rounds} rounds (median), in turns\n")
    print(reporting.markdown_table(["model", "threads", "s/step", "x 1 thread", "losses rel. diff from 1 thread"], rows))
    print(idle.line())


def sampling_table(args) -> None:
    """Two threads for a trial's sampling two ways: torch's intra-op threads, or the batch in two
    parts on two worker threads (``dicesearch.train.sampling``), beside one thread."""
    from dicesearch.model import build_model
    from dicesearch.train import SamplingConfig
    from dicesearch.train import sampling as module

    space, base, data, budget = _space(args)
    models = {}
    for name, spec in {"base": base, "pick": space.apply(PICK)}.items():
        torch.manual_seed(0)
        model = build_model(spec).eval()
        with torch.no_grad():  # off the zero-initialised gates, so that the samples depend on the weights
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        models[name] = (spec, model)
    n = budget.fid_samples
    config = SamplingConfig(sampler=budget.sampler, steps=budget.sampling_steps, num_samples=n, seed=42, batch_size=min(n, 250))
    parts = module.thread_parts
    ways = {"1 thread": (1, parts), "2 intra-op threads": (2, lambda indices, device: [indices]), "2 parts (2 worker threads)": (2, parts)}
    seconds = {(m, w): [] for m in models for w in ways}
    samples = {}
    with _Idle() as idle:
        for r in range(args.rounds):
            for m, (spec, model) in models.items():
                for w, (threads, split) in ways.items():
                    torch.set_num_threads(threads)
                    module.thread_parts = split
                    start = time.perf_counter()
                    samples[m, w] = module.sample_images(model, spec, data, config, device="cpu")
                    seconds[m, w].append(time.perf_counter() - start)
            print(f"  round {r + 1}: " + "; ".join(f"{m} {w} {seconds[m, w][-1]:.2f} s" for m in models for w in ways), flush=True)
    module.thread_parts = parts
    torch.set_num_threads(1)
    rows = []
    for m in models:
        one = _median(seconds[m, "1 thread"])
        for w in ways:
            diff = float((samples[m, w] - samples[m, "1 thread"]).abs().max())
            rows.append([m, w, f"{_median(seconds[m, w]):.2f}", f"{one / _median(seconds[m, w]):.2f}", "same bits" if diff == 0 else f"{diff:.1e}"])
    print(f"\ntwo threads for a trial's sampling: {n} images x {budget.sampling_steps} {budget.sampler} steps, {args.rounds} rounds (median), in turns\n")
    print(reporting.markdown_table(["model", "threads", "s", "x 1 thread", "largest sample difference from 1 thread"], rows))
    print(idle.line())


# (batch, input channels, multiplier, grid): the depthwise convolutions of the default space's models
DEPTHWISE_SHAPES = {"DICE's pair, 16x16": (64, 32, 2, 16), "DICE's pair, 8x8": (64, 64, 2, 8), "ConvNeXt's 7x7, 16x16": (64, 32, 1, 16)}


def _seconds(function, rounds: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return _median(times)


def native_table(args) -> None:
    """The depthwise convolutions on PyTorch's kernels against the native ones, then whole training steps."""
    from dicesearch import native
    from dicesearch.ops import depthwise
    from dicesearch.speed.allocator import keep_freed_memory

    if depthwise.native_kernels() is None:
        print(f"\nnative kernels unavailable: {native.why_unavailable('depthwise')}")
        return
    torch.set_num_threads(1)
    keep_freed_memory()  # as a trial process does: the timings then leave out fresh pages' faults
    paths = {"oneDNN (repeat, flipped filter)": depthwise._RepeatedChannels, "native": depthwise._NativeDepthwise}
    rows = []
    with _Idle() as idle:
        for name, (b, c, m, grid) in DEPTHWISE_SHAPES.items():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(b, c, grid, grid, generator=g).contiguous(memory_format=torch.channels_last)
            weight, bias = torch.randn(c * m, 1, 7, 7, generator=g), torch.randn(c * m, generator=g)
            grad = torch.randn(b, c * m, grid, grid, generator=g).contiguous(memory_format=torch.channels_last)
            parts, results = {}, {}
            for path, function in paths.items():
                def forward(function=function):
                    return function.apply(x, weight, bias)

                xs, ws = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)

                def backward(function=function, xs=xs, ws=ws):
                    xs.grad = ws.grad = None
                    function.apply(xs, ws, bias).backward(grad)
                    return xs.grad, ws.grad

                parts[path] = [_seconds(forward, args.rounds * 5), _seconds(backward, args.rounds * 5)]
                results[path] = (forward(), *backward())
            diff = max(((a - r).abs().max() / r.abs().max()).item() for a, r in zip(results["native"], results["oneDNN (repeat, flipped filter)"]))
            one = parts["oneDNN (repeat, flipped filter)"]
            for path in paths:
                fwd, fwd_bwd = parts[path]
                rows.append([name, path, f"{fwd * 1e3:.2f}", f"{(fwd_bwd - fwd) * 1e3:.2f}", f"{fwd_bwd * 1e3:.2f}", f"{one[1] / fwd_bwd:.2f}",
                             "0" if path != "native" else f"{diff:.1e}"])  # fmt: skip
    print(f"\ndepthwise 7x7 convolutions at batch 64, one thread, {args.rounds * 5} rounds (median), in turns\n")
    print(reporting.markdown_table(["shape", "path", "forward ms", "both gradients ms", "forward + backward ms", "x oneDNN", "max diff (rel.)"], rows))
    print(idle.line())

    _steps_with_and_without(args, depthwise, ("oneDNN", "native"), "depthwise", "depthwise convolutions on oneDNN or native")


def _steps_with_and_without(args, ops_module, labels: tuple[str, str], column: str, what: str) -> None:
    """Training steps of the base model and the pick at one thread, ``ops_module.takes_native_path``
    off and on (rows in turns), with each one's losses' largest relative difference from off."""
    from unittest import mock

    from dicesearch.data import load_dataset

    space, base, data, budget = _space(args)
    dataset = load_dataset(data)
    models = {"base": base, "pick": space.apply(PICK)}
    native_path = ops_module.takes_native_path
    step, losses = {}, {}
    with _Idle() as idle:
        for _ in range(args.rounds):
            for m, spec in models.items():
                for on in (False, True):
                    with mock.patch.object(ops_module, "takes_native_path", native_path if on else (lambda *a: False)):
                        seconds, losses[m, on], _ = _train_steps(spec, data, dataset, budget, args.steps)
                    step.setdefault((m, on), []).append(seconds)
    rows = []
    for m, spec in models.items():
        off = _median(step[m, False])
        for on in (False, True):
            diff = max(abs(a - b) / abs(b) for a, b in zip(losses[m, on], losses[m, False]))
            rows.append([f"{m} ({spec.name if m == 'base' else 'the pick'})", labels[on], f"{_median(step[m, on]):.4f}",
                         f"{off / _median(step[m, on]):.2f}", "same bits" if diff == 0 else f"{diff:.1e}"])  # fmt: skip
    print(f"\ntraining steps at batch {budget.batch_size}, one thread, {what}, {args.steps} timed steps x {args.rounds} rounds (median), in turns\n")
    print(reporting.markdown_table(["model", column, "s/step", f"x {labels[0]}", f"losses rel. diff from {labels[0]}"], rows))
    print(idle.line())


# (batch, channels, grid): the DICE blocks of the default space's stages (the first stage's widths 64-128)
MERGE_NORM_SHAPES = {"stage 3, 16x16": (64, 32, 16), "stage 2, 8x8": (64, 64, 8), "stage 1, 4x4": (64, 96, 4)}


def merge_norm_table(args) -> None:
    """The DICE merge and conditioned LayerNorm as PyTorch's operations against the fused native op, then whole training steps."""
    from dicesearch import native
    from dicesearch.ops import merge_norm
    from dicesearch.speed.allocator import keep_freed_memory

    if merge_norm.native_kernels() is None:
        print(f"\nnative kernels unavailable: {native.why_unavailable('merge_norm')}")
        return
    torch.set_num_threads(1)
    keep_freed_memory()  # as a trial process does
    paths = {"PyTorch (merge, LayerNorm, modulation)": merge_norm.merged_norm_reference, "native (fused)": merge_norm.merged_norm}
    rows = []
    with _Idle() as idle:
        for name, (b, c, grid) in MERGE_NORM_SHAPES.items():
            g = torch.Generator().manual_seed(0)
            pair = torch.randn(b, grid, grid, 2 * c, generator=g).permute(0, 3, 1, 2)  # channels-last, as the convolution leaves it
            lam, multiplier, offset = torch.tensor([2.0]), 1 + 0.1 * torch.randn(b, c, generator=g), torch.randn(b, c, generator=g)
            grad = torch.randn(b, grid, grid, c, generator=g)
            parts, results = {}, {}
            for path, function in paths.items():
                def forward(function=function):
                    return function(pair, lam, multiplier, offset, 1e-6)

                leaves = [t.clone().requires_grad_(True) for t in (pair, lam, multiplier, offset)]

                def backward(function=function, leaves=leaves):
                    for t in leaves:
                        t.grad = None
                    function(*leaves, 1e-6).backward(grad)
                    return tuple(t.grad for t in leaves)

                with torch.no_grad():
                    parts[path] = [_seconds(forward, args.rounds * 5)]
                parts[path].append(_seconds(backward, args.rounds * 5))
                results[path] = (forward(), *backward())
            torch_path, native_path = paths
            diff = max(((a - r).abs().max() / r.abs().max()).item() for a, r in zip(results[native_path], results[torch_path]))
            reference = parts[torch_path][1]
            for path in paths:
                fwd, fwd_bwd = parts[path]
                rows.append([name, path, f"{fwd * 1e3:.2f}", f"{(fwd_bwd - fwd) * 1e3:.2f}", f"{fwd_bwd * 1e3:.2f}", f"{reference / fwd_bwd:.2f}",
                             "0" if path == torch_path else f"{diff:.1e}"])  # fmt: skip
    print(f"\nDICE merge + conditioned LayerNorm at batch 64, one thread, {args.rounds * 5} rounds (median), in turns\n")
    print(reporting.markdown_table(["block", "path", "forward ms", "backward ms", "forward + backward ms", "x PyTorch", "max diff (rel.)"], rows))
    print(idle.line())

    _steps_with_and_without(args, merge_norm, ("PyTorch", "native (fused)"), "merge + norm",
                            "native depthwise convolutions, the merge and norm on PyTorch or fused")


PICK = {"conditioning.kind": "adaln_zero", "stages[0].channels": 96, "stages[2].depth": 3, "stages[*].block.lambda_init": 2.0}


def _child_imports(queue) -> None:
    """What a trial process imports before it trains (dicesearch.sweep.lifecycle.process.PRELOAD)."""
    entered = time.process_time()
    import importlib

    from dicesearch.sweep.lifecycle.process import PRELOAD

    for module in PRELOAD:
        importlib.import_module(module)
    queue.put((entered, time.process_time()))


def start_table(args) -> None:
    from dicesearch.sweep.lifecycle.process import PRELOAD

    contexts = {"spawned (before)": multiprocessing.get_context("spawn"), "forked from the preloading server": multiprocessing.get_context("forkserver")}
    contexts["forked from the preloading server"].set_forkserver_preload(list(PRELOAD))
    wall = {name: [] for name in contexts}
    cpu = {name: [] for name in contexts}
    with _Idle() as idle:
        for name, context in contexts.items():  # the server's own start, once (its imports happen there, not per trial)
            queue = context.Queue()
            warm = context.Process(target=_child_imports, args=(queue,))
            warm.start()
            queue.get()
            warm.join()
        for _ in range(args.rounds):
            for name, context in contexts.items():
                queue = context.Queue()
                start = time.perf_counter()
                process = context.Process(target=_child_imports, args=(queue,))
                process.start()
                _, done_cpu = queue.get()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(done_cpu)
                process.join()
    rows = [[name, f"{_median(wall[name]):.2f}", f"{_median(cpu[name]):.2f}"] for name in contexts]
    print(f"\na trial process from start to its imports done ({len(PRELOAD)} modules), {args.rounds} rounds\n")
    print(reporting.markdown_table(["trial process", "wall s", "child CPU s"], rows))
    print(idle.line())


def _first_rung(conn, args, cache: str, locked: bool, reference_first: bool = False) -> None:
    """A trial-like process: the space's base model to the first rung at one thread, scored
    against the budget's reference statistics in ``cache``; sends (wall s, scoring s, scores).
    ``reference_first``: the statistics asked for before the images' features (as before)."""
    import contextlib

    start = time.perf_counter()
    os.environ["DICESEARCH_CACHE_DIR"] = cache
    if not locked:  # the version before: every process that misses the cache computes it
        from dicesearch.metrics import reference

        reference._computing = lambda path: contextlib.nullcontext()
    if reference_first:
        from dicesearch import metrics

        scores_after = metrics.image_scores
        metrics.image_scores = lambda images, reference, *a, **k: scores_after(images, reference() if callable(reference) else reference, *a, **k)
    from dicesearch.objective import evaluate

    torch.set_num_threads(1)
    space, base, data, budget = _space(args)
    fidelity = space.config.fidelity
    with tempfile.TemporaryDirectory() as scratch:
        evaluation = evaluate(
            base, data, budget, seed=space.config.seed, run_dir=scratch, rungs=fidelity.rungs, rung_samples=fidelity.samples,
            on_rung=lambda index, steps, metrics: False, device="cpu", count_static=False,
        )  # fmt: skip
    metrics = evaluation.metrics
    conn.send((time.perf_counter() - start, metrics["fid_seconds"], {k: v for k, v in metrics.items() if k.startswith(("fid_", "kid_", "sfid_", "precision_", "recall_")) and not k.endswith("_seconds")}))
    conn.close()


SWEEP_START_S = 2.0  # the default sweep's stores and its first gates on the 2-core machine: its checks' end to its first trial


def reference_table(args) -> None:
    """A sweep's first two trials on an empty FID cache, three ways (module docstring)."""
    from dicesearch.sweep.lifecycle.process import start_trial_server, trial_context
    from dicesearch.sweep.lifecycle.reference_ahead import ReferenceAhead

    space, _, data, budget = _space(args)
    context = trial_context()
    start_trial_server()  # up before the first row, as it is before a sweep's first trial
    _in_a_trial_process(os.getpid)
    ways = (
        "each trial computes it (before)", "the lock: one computes, the other waits", "computed beside them, asked for before the features",
        "computed beside them, asked for after the features (now)",
    )  # fmt: skip
    wall, scoring, scores = {w: [] for w in ways}, {w: [] for w in ways}, {}
    with _Idle() as idle:
        for r in range(args.rounds):
            for way in ways:
                with tempfile.TemporaryDirectory() as cache:
                    os.environ["DICESEARCH_CACHE_DIR"] = cache  # what the reference process takes
                    start = time.perf_counter()
                    ahead = ReferenceAhead.start(data, budget, [space.config.seed], "cpu") if way in ways[2:] else None
                    time.sleep(SWEEP_START_S)  # the sweep's stores and first gates, between its checks and its first trial
                    pipes = []
                    for _ in range(2):
                        here, there = context.Pipe()
                        context.Process(target=_first_rung, args=(there, args, cache, way != ways[0], way != ways[3])).start()
                        there.close()
                        pipes.append(here)
                    results = [pipe.recv() for pipe in pipes]
                    wall[way].append(time.perf_counter() - start)
                    if ahead is not None:
                        ahead.close()
                    scoring[way].append(max(seconds for _, seconds, _ in results))
                    scores[way] = [s for _, _, s in results]
                    del os.environ["DICESEARCH_CACHE_DIR"]
            print(f"  round {r + 1}: " + "; ".join(f"{w} {wall[w][-1]:.1f} s" for w in ways), flush=True)
    key = space.config.rung_keys[0]
    rows = []
    for way in ways:
        same = all(a == b for a, b in zip(scores[way], scores[ways[0]]))
        rows.append([way, f"{_median(wall[way]):.1f}", f"{_median(scoring[way]):.1f}", f"{scores[way][0][key]:.4f}", "same bits" if same else "differ"])
    print(f"\nthe first two trials on an empty FID cache: the base model to {space.config.fidelity.rungs[0]} steps, {key}, two at once, "
          f"{SWEEP_START_S:g} s after the sweep's checks (the wall counts from there), {args.rounds} rounds (median)\n")
    print(reporting.markdown_table(["reference statistics", "wall s, both scored", "the slower trial's scoring s", key, "scores vs before"], rows))
    print(idle.line())


_START_PROBE = """
import atexit, gc, os, sys, time
begun = time.perf_counter()
atexit.register(lambda: open("exit-begins", "w").write(repr(time.time())))  # registered first: the last atexit function
from dicesearch.speed import collector
paused = sys.argv[2] == "now"
if paused:
    collector.pause()
    collector.freeze_at_exit()
from rich.console import Console
from dicesearch.sweep.commands import quiet_libraries
quiet_libraries()
from dicesearch.sweep.backends.optuna_workers import OptunaSweep
from dicesearch.sweep.lifecycle.session import sweep_params
from dicesearch.sweep.prechecks import check_budget_reachable, check_data, check_trial_memory
from dicesearch.sweep.space.search_space import load_search_space
from dicesearch.sweep.store.locations import SweepLocations
space = load_search_space(sys.argv[1])
check_data(space)
check_budget_reachable(space)
check_trial_memory(space, "cpu")
OptunaSweep(space, SweepLocations.for_config(space.config), Console(quiet=True), "cpu").session.open(sweep_params(space.config), None)
collector.resume()
print(time.perf_counter() - begun)
"""


_SERVER_PROBE = """
import importlib, sys, time
begun = time.perf_counter()
from dicesearch.sweep.lifecycle.process import PRELOAD
for module in PRELOAD if sys.argv[1] == "now" else [m for m in PRELOAD if not m.endswith("preload_begins")]:
    importlib.import_module(module)
print(time.perf_counter() - begun)
"""


def collector_table(args) -> None:
    """A sweep's start and the interpreter's teardown, the cyclic collector as before and as now."""
    import subprocess

    space = os.path.abspath(args.space)
    ways = {"before": "the collector on throughout (before)", "now": "off for the start, then frozen; frozen at exit (now)"}
    start, teardown, server = {w: [] for w in ways}, {w: [] for w in ways}, {w: [] for w in ways}
    with _Idle() as idle:
        for _ in range(args.rounds):
            for way in ways:
                with tempfile.TemporaryDirectory() as scratch:  # the stores are new each time, as in a first sweep
                    out = subprocess.run([sys.executable, "-c", _START_PROBE, space, way], cwd=scratch, capture_output=True, text=True, check=True)
                    ended = time.time()
                    start[way].append(float(out.stdout.split()[-1]))
                    teardown[way].append(ended - float(open(os.path.join(scratch, "exit-begins")).read()))
                out = subprocess.run([sys.executable, "-c", _SERVER_PROBE, way], capture_output=True, text=True, check=True)
                server[way].append(float(out.stdout.split()[-1]))
    rows = [[label, f"{_median(start[w]):.2f}", f"{_median(teardown[w]):.2f}", f"{_median(server[w]):.2f}"] for w, label in ways.items()]
    print(f"\na sweep's start (imports, the space loaded and checked, the stores opened), its teardown, and the preloading server's imports and network, fresh interpreters, {args.rounds} rounds (median)\n")
    print(reporting.markdown_table(["cyclic garbage collector", "sweep start s", "teardown after the last atexit function s", "the server's preload s"], rows))
    print(idle.line())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/cascade.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    parser.add_argument("--train-steps", type=int, default=400, help="steps the scored model is trained first")
    parser.add_argument("--images", type=int, default=32, help="images of the Inception table")
    parser.add_argument("--only", nargs="+", choices=LEVERS, default=list(LEVERS))
    parser.add_argument("--tail-scores", action="store_true", help="with cores: the pick's 400 -> 1600 steps at one thread and at two, scored")
    args = parser.parse_args()
    print(reporting.machine_line("cpu") + " (other jobs may share this machine)")
    tables = {"precision": precision_table, "inception": inception_table, "winograd": winograd_table, "cores": cores_table, "chunks": chunks_table, "sampling": sampling_table, "native": native_table, "merge_norm": merge_norm_table, "start": start_table, "reference": reference_table, "collector": collector_table}
    for lever in args.only:
        tables[lever](args)


if __name__ == "__main__":
    main()
