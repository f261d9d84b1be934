"""The library behind the PA-Seg scripts, in layers; a module imports only from its own layer
and the layers below it (``tests/utilities/test_structure.py`` checks it):

1. :mod:`utilities.core` — errors, text files read as data, logging, processes and devices;
   nothing about segmentation.
2. :mod:`utilities.method` — the method itself: the losses, schedules and optimiser, the
   geodesic seed expansion, the metrics, the training-health rules, the names and defaults
   every script shares and the command lines of the sequence.
3. :mod:`utilities.data` — files and grids, images and splits, the dataset file, TorchIO loaders.
4. :mod:`utilities.models` — what a trained model is: checkpoints, model packages, prediction.
5. :mod:`utilities.training` — the training loop, its run folders, validation and progress.
6. :mod:`utilities.evaluation` — scoring predictions against labels, and the HTML report.
7. :mod:`utilities.workflow` — the steps the scripts run: the shared command line, stage 0
   over a folder, the plan (its fingerprint and its rules).

``utilities/scores.py`` is a script (the paper's ``python utilities/scores.py``), not a module
of the library.
"""
