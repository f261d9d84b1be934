"""Layer 7, the steps the scripts run: the command line every script shares (``cli``), stage 0 over
a split or folder (``stage0``) and the plan step (``plan``)."""
