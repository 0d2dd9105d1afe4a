"""Statistics of predictions: metrics (`metrics`) and their uncertainty (`bootstrap`: CIs, paired comparisons, DeLong).

Plain NumPy and SciPy, importing nothing else of cardiacnets, so that training
(validation metrics, calibration thresholds) and every evaluation score with
the same functions.
"""
