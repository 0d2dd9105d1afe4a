"""ECG signal conditioning and quality checks: standardisation (`standardize`), filters and quality findings.

The in-memory record every reader returns (`cardiacnets.io.ecg_record.ECGRecord`)
and the lead names (`cardiacnets.io.ecg_leads`) sit one layer down, in `cardiacnets.io`.
"""
