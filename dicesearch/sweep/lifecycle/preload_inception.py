"""Imported by the preloading server (``process.PRELOAD``) for its side effect: the FID Inception
network loaded and its eager version built once, before any trial process forks from it.

Every trial scores its rungs with the network, and a trial process is a fresh fork of the
server: without this each one loaded and verified the network file (~0.4 s) and built and
checked the eager network (~0.7 s) again, about 1.1 s of a first-rung trial's ~15 on the 2-core
machine, 22 times in a default sweep. Forked after this, a trial process finds both in the
caches of ``load_inception`` and ``eager_inception`` (keyed by the file's path, size and time,
so a trial told to use another file loads that one).

Only the default network on the CPU, with torch at one thread while it runs, so that no
OpenMP thread pool exists in the server when it forks. Whatever goes wrong here is left for
the trials to meet and report as they always did: this import never fails.

Imported last, it also ends what ``preload_begins`` began: what the server made is frozen
out of the cyclic collector's passes, and the collector is on again, before any fork.
"""

from __future__ import annotations


def _warm() -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from dicesearch.metrics.inception import load_inception
        from dicesearch.metrics.inception_eager import eager_inception

        with torch.inference_mode():
            eager_inception(load_inception())
    except Exception:  # noqa: BLE001 - a trial meets the same problem and reports it
        pass
    finally:
        torch.set_num_threads(threads)


try:
    _warm()
finally:
    from dicesearch.speed import collector

    collector.resume()  # preload_begins paused it
