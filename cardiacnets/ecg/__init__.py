"""ECG records, lead handling, signal conditioning and quality checks."""

from cardiacnets.ecg.leads import STANDARD_LEADS, canonical_lead_name
from cardiacnets.ecg.record import ECGRecord

__all__ = ["ECGRecord", "STANDARD_LEADS", "canonical_lead_name"]
