"""Layer 4, trained models: checkpoints (one writer and one reader per kind), the sliding-window
prediction and what a mask is made of, and model packages (run folder, checkpoint or zip)."""
