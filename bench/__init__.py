"""trtforge benchmarks: what trtforge costs and saves, side by side with the plain tools.

Run ``python -m bench`` (or ``python bench/run.py``); results go to ``bench/results/``.
"""
