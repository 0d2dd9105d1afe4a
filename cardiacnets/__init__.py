"""cardiacnets: learn what a cardiac MRI would show from an ECG.

The package implements the CardiacNets system (Ding et al., "Cross-modal
cardiac MRI ... from ECG", arXiv 2411.13602): UK Biobank-style ingest of ECG
and cine CMR, ECG/CMR encoders aligned contrastively, ECG-conditioned CMR
generation and ECG-only heads. A physiologically grounded paired simulator
(`cardiacnets.simulate`) is the built-in data source for demos and tests.
"""

__version__ = "0.1.8"
