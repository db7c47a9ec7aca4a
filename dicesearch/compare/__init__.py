"""``dicesearch compare``: models trained paired over seeds at equal cost, judged against a baseline.

A comparison is a study of fixed configurations, every model x every seed, run through the
sweep's own trial lifecycle by either backend:

* :mod:`.config` (the comparison file), :mod:`.models` (presets, spec files, a sweep's best),
  :mod:`.plan` (the trial source: model x seed, each model's compute-matched steps),
  :mod:`.run` and :mod:`.command` (what the command does), :mod:`.collect` (the study's runs
  back as results), :mod:`.report` (the verdict printed, written and logged);
* the statistics, one idea a module: :mod:`.paired` (Student-t interval, paired t-test),
  :mod:`.holm` (Holm 1979), :mod:`.seeds_needed` (paired-t power), :mod:`.noncentral_t`,
  :mod:`.metric` (direction and equivalence margin), :mod:`.verdict` (the rule for the word),
  over the typed inputs of :mod:`.results`;
* the report's parts: :mod:`.tables`, :mod:`.csv_files`, :mod:`.pictures`.

Imported one module at a time (``from dicesearch.compare.verdict import compare``), so that
reading a plan does not load matplotlib.
"""
