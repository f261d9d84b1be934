"""The experiment drivers (ablations, the dataset family, the nnU-Net baseline) and their package."""
