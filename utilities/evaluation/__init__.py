"""Layer 6, evaluation: scoring segmentations against full labels (``scoring``) and the HTML report
of scored predictions (``report``)."""
