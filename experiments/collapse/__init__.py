"""The collapse analysis behind ``experiments/collapse_analysis.py``: :mod:`.measurements` (the
losses' energies and gradients on synthetic and realistic cases, the ramp-up in steps) and
:mod:`.report` (the plots and the Markdown page ``docs/results/collapse.md`` written from them)."""
