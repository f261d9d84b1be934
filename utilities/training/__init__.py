"""Layer 5, training: run folders and what is written into them (``runs``), validation on whole
volumes, ``progress.png`` and the training loop shared by stage 1 and SCM (``engine``)."""
