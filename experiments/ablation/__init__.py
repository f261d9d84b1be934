"""The multi-seed ablation runner behind ``experiments/ablate.py``, one concern per module.

Modules, each importing only those above it:

- :mod:`.scripts`: the scripts the runner calls, and their argument parsers;
- :mod:`.config`: the JSON config, its schema (:data:`.config.SCHEMA`, one record per key) and its checks;
- :mod:`.commands`: the runs of a config and the command line of every step (stage 0, training,
  inference, scores);
- :mod:`.checks`: every command's flags and checkpoints checked before anything runs;
- :mod:`.markers`: the files that make a run resumable and skippable (started, trained, done);
- :mod:`.summary`: per-run health, statistics, the table and the box plot;
- :mod:`.execution`: running the steps (subprocesses or in-process), ``jobs`` at a time, and
  :func:`.execution.run_ablation`, the whole ablation.
"""
