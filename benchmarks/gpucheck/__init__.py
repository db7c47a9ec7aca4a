"""The pieces of benchmarks/gpu_check.py, one idea a module.

* ``environment``: which GPU, driver, torch, CUDA; CPU-only means the reduced form.
* ``peaks``: dense fp16/bf16 tensor-core peak FLOP/s by device name (for MFU).
* ``plan``: what each section measures, on a GPU and in the reduced CPU form.
* ``timebox``: the check's time budget, shared out to the sections.
* ``markdown``: tables and the report.
* ``memory``, ``speed``, ``sampling``, ``kernels``: the four sections.
* ``gate``: the largest batch the memory estimator fits in 24 GiB.
"""
