"""Downstream heads: cardiac indices and disease screening from the ECG alone (CardiacNets, arXiv 2411.13602).

- `model`: `HeadsModel` — an ECG encoder with a regression head for the CMR indices,
  one logit per screening label and a cardiomyopathy-subtype head; saves its
  target standardisation, validation thresholds and prediction intervals.
- `targets`: which manifest columns are targets, their units and masks, label
  fractions and case–control matching.
- `evaluation`: predictions over a split, metrics with bootstrap CIs, paired
  comparisons, plots (``cardiacnets evaluate heads``).
- `predict`: `predict_record` — one ECG file → every index with a prediction
  interval, every screening probability, quality findings, provenance
  (``cardiacnets predict``).
- `compare`: the comparison of training modes and label fractions
  (``cardiacnets heads compare``).

Training is the ``heads`` task of the training loop (`cardiacnets.train.heads_task`).
"""

from cardiacnets.heads.model import HeadsCalibration, HeadsModel, HeadsModelConfig
from cardiacnets.heads.predict import predict_record

__all__ = ["HeadsCalibration", "HeadsModel", "HeadsModelConfig", "predict_record"]
