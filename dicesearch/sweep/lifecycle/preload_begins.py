"""Imported first by the preloading server (``process.PRELOAD``), for its side effect: Python's
cyclic garbage collector off while the server imports what every trial needs.

Those imports make several hundred thousand objects that live as long as the server and its
forks, and the collector's full passes over them freed nothing: the server's imports took
4.5-4.8 s with it on and 3.7 s with it off on the 2-core machine, on the core beside the
sweep's own start. ``preload_inception``, imported last, freezes what the server made and
turns the collector back on before any trial forks (Python's advice for a process that forks
without exec: ``gc.freeze()`` before the fork, so that the children neither scan those objects
nor copy their pages), and every trial process turns it on again at its start, whatever
happened here (``process.trial_child``).
"""

from __future__ import annotations

from dicesearch.speed import collector

collector.pause()
