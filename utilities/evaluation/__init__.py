"""Layer 6, evaluation: scoring segmentations against full labels (``scoring``) and the HTML report
of scored predictions (``report``).

The words of scoring, one per layer: a *metric* is a number computed on two masks in memory
(:mod:`utilities.method.metrics`, layer 2: Dice, Jaccard, precision, recall, HD95, ASSD);
*scoring* reads prediction and label files, computes the metrics per case and writes the scores
CSV (:mod:`utilities.evaluation.scoring`, here; the script ``utilities/scores.py``, whose output
is the *scores*); *validation* is the Dice a training run computes each epoch to choose its
checkpoints (:mod:`utilities.training.validation`, layer 5)."""
