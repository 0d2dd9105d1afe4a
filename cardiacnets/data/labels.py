"""Disease labels from ICD-10 codes, through a configurable mapping.

UK Biobank stores ICD-10 diagnoses (field 41270) without the dot (``I420``);
the mapping accepts codes with or without dots, whole categories (``I42``),
subcategories (``I25.5``) and category ranges (``I20-I25``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_ICD10_MAP: dict[str, list[str]] = {
    "cardiomyopathy": ["I42", "I43", "I25.5"],
    "heart_failure": ["I50"],
    "coronary_artery_disease": ["I20-I25"],
    "pulmonary_hypertension": ["I27"],
    "pericardial_disease": ["I30-I32"],
    "myocarditis": ["I40-I41"],
}

_CODE = re.compile(r"^[A-Z][0-9]{2}[0-9A-Z]*$")


def normalize_icd10(code: str) -> str:
    """Upper-case, strip and drop the dot: ``'i25.5 '`` → ``'I255'``."""
    return code.strip().upper().replace(".", "")


def _expand(spec: str) -> list[str]:
    """Prefixes matched by one mapping entry (``'I20-I25'`` → I20 … I25)."""
    spec = spec.strip().upper()
    if "-" in spec:
        start, end = (normalize_icd10(s) for s in spec.split("-", 1))
        if not (_CODE.match(start) and _CODE.match(end)) or start[0] != end[0] or len(start) != 3 or len(end) != 3:
            raise ValueError(f"ICD-10 range {spec!r} must join two categories of one chapter, like I20-I25")
        lo, hi = int(start[1:]), int(end[1:])
        if lo > hi:
            raise ValueError(f"ICD-10 range {spec!r} is reversed")
        return [f"{start[0]}{n:02d}" for n in range(lo, hi + 1)]
    code = normalize_icd10(spec)
    if not _CODE.match(code):
        raise ValueError(f"{spec!r} is not an ICD-10 code")
    return [code]


class ICD10Mapper:
    """Maps a subject's ICD-10 codes to binary disease labels.

    Args:
        mapping: label name → list of codes, categories or ranges.
    """

    def __init__(self, mapping: dict[str, list[str]] | None = None):
        mapping = DEFAULT_ICD10_MAP if mapping is None else mapping
        self.prefixes = {label: tuple(p for spec in specs for p in _expand(spec)) for label, specs in mapping.items()}

    @property
    def labels(self) -> list[str]:
        return list(self.prefixes)

    def __call__(self, codes: Iterable[str]) -> dict[str, bool]:
        """Labels for one subject's codes (empty or NaN entries ignored)."""
        clean = [normalize_icd10(c) for c in codes if isinstance(c, str) and c.strip()]
        return {label: any(c.startswith(p) for c in clean for p in prefixes) for label, prefixes in self.prefixes.items()}
