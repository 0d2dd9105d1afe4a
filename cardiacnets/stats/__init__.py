"""Statistics of predictions: metrics (`metrics`), their uncertainty (`bootstrap`: CIs, paired comparisons,
DeLong) and how separable two sets of rows are (`separability`: a cross-validated classifier's AUROC).

Plain NumPy and SciPy (scikit-learn for `separability`), importing nothing else of cardiacnets, so that
training (validation metrics, calibration thresholds) and every evaluation score with the same functions.
"""
