"""How well a simple classifier separates two sets of feature rows: a cross-validated AUROC.

The realism benchmarks (simulated vs real ECGs and frames, `cardiacnets.bench.realism`)
and the generation evaluation (generated vs true cines,
`cardiacnets.evaluate.generation_scoring`) ask the same question: could a
standardised logistic regression tell the two sets apart? 0.5 means it could
not; 1.0 means perfectly. scikit-learn does the fitting.
"""

from __future__ import annotations

import numpy as np

#: Stratified folds and repeats of `cv_auroc`.
CV_FOLDS = 5
CV_REPEATS = 5


def cv_auroc(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Repeated stratified K-fold AUROC of a standardised logistic regression.

    Missing values are imputed with the training fold's median; all-missing columns are dropped.

    Args:
        x: (n, k) feature rows.
        y: (n,) 1 for one set (simulated, generated), 0 for the other (real, true).
        seed: the folds' random state.

    Returns:
        ``{"auroc": mean over repeats, "sd": SD over repeats, "n_sim": rows with y 1, "n_real": rows with y 0}``.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.where(np.isfinite(x), x, np.nan)
    keep = ~np.all(np.isnan(x), axis=0)
    x = x[:, keep]
    per_repeat = []
    splitter = RepeatedStratifiedKFold(n_splits=CV_FOLDS, n_repeats=CV_REPEATS, random_state=seed)
    scores = np.zeros((CV_REPEATS, len(y)))
    for k, (train, test) in enumerate(splitter.split(x, y)):
        model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                              LogisticRegression(C=1.0, max_iter=5000))
        model.fit(x[train], y[train])
        scores[k // CV_FOLDS, test] = model.predict_proba(x[test])[:, 1]
    for repeat in scores:
        per_repeat.append(roc_auc_score(y, repeat))
    return {"auroc": round(float(np.mean(per_repeat)), 3), "sd": round(float(np.std(per_repeat)), 3),
            "n_sim": int(y.sum()), "n_real": int((1 - y).sum())}
