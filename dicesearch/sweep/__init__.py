"""Sweeps (``dicesearch sweep``) and the trial lifecycle comparisons share, by role:

* :mod:`~dicesearch.sweep.space`: what to search: the search-space file (``config``,
  ``distributions``, ``spec_paths``, ``fidelity``), sampling it (``search_space``), a proposal.
* :mod:`~dicesearch.sweep.store`: what a sweep keeps: its Optuna study (``studies``), the
  record schema (``schema``), one read of the study and its questions (``view``, ``queries``),
  where things go (``locations``), locks, the MLflow mirror.
* :mod:`~dicesearch.sweep.lifecycle`: one trial's life, whichever backend runs it
  (``trial``: prepare, begin, run, finish), its typed messages, the budget gate, the trial
  process, the rung rules, the live progress lines, a sweep process's session.
* :mod:`~dicesearch.sweep.backends`: who drives the lifecycle: Optuna worker threads
  (``optuna_workers``) or Ray Tune (``ray_tune``); peers, neither imports the other.
* :mod:`~dicesearch.sweep.results`: the end of a sweep: the ranked table, statistics, plots,
  the cost lines, ``export`` and ``calibrate``.
* ``prechecks`` (what is checked before anything is written) and ``commands`` (the CLI's
  entry: picks a backend).
"""
