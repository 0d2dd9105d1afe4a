"""Downstream heads: cardiac indices and disease screening from the ECG alone (CardiacNets, arXiv 2411.13602).

- `model`: `HeadsModel` — an ECG encoder with a regression head for the CMR indices,
  one logit per screening label and a cardiomyopathy-subtype head; saves its
  target standardisation, validation thresholds and prediction intervals.
- `targets`: which manifest columns are targets, their units and masks, label
  fractions and case–control matching.
- `inference`: a trained model over a split (`predict_split`) and the
  calibration stored with it (Youden thresholds, conformal intervals).
- `predict`: `predict_record` — one ECG file → every index with a prediction
  interval, every screening probability, quality findings, provenance
  (``cardiacnets predict``).

Training is the ``heads`` task of the training loop (`cardiacnets.train.heads_task`);
the evaluation (metrics with bootstrap CIs, paired comparisons, plots: ``cardiacnets
evaluate heads``) and the comparison of training modes and label fractions
(``cardiacnets heads compare``) are in `cardiacnets.evaluate.heads` and
`cardiacnets.evaluate.heads_compare`.
"""

from cardiacnets.heads.model import HeadsCalibration, HeadsModel, HeadsModelConfig
from cardiacnets.heads.predict import predict_record

__all__ = ["HeadsCalibration", "HeadsModel", "HeadsModelConfig", "predict_record"]
