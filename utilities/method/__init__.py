"""Layer 2, the method: PA-Seg's losses (partial Dice+CE, mCRF, VM, KD), the ramp-up and learning-rate
schedules, the optimiser and mixed precision, the geodesic seed expansion of stage 0, the
segmentation metrics and the training-health rules. Arrays and tensors in, numbers out: no files.
Also the names and defaults every script shares (:mod:`utilities.method.defaults`: the scripts,
the expanded seeds' postfix, the recipe) and the command lines of the sequence built from them
(:mod:`utilities.method.sequence`)."""
