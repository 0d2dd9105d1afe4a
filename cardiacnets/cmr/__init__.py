"""Cine CMR standardisation (`standardize`) and cardiac function indices (`indices`).

The in-memory image every reader returns and the label convention
(`cardiacnets.io.cmr_image`: `CMRImage`, `SEG_LABELS`, `VIEWS`) sit one layer down, in `cardiacnets.io`.
"""
