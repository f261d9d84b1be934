"""Layer 2, the method: PA-Seg's losses (partial Dice+CE, mCRF, VM, KD), the ramp-up and learning-rate
schedules, the optimiser and mixed precision, the geodesic seed expansion of stage 0, the
segmentation metrics and the training-health rules. Arrays and tensors in, numbers out: no files."""
