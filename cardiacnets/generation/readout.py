"""The ECG read-out of the anatomy-first generator: ECG features → CMR index estimates → the prior's condition.

`ConditionReadout` is a frozen linear map fitted by ridge regression (`ridge_loo`,
`fit_ridge`) on the training split: from the aligned ECG encoder's pooled
embedding and mean token, the demographics and, optionally, the ECG device's
measurements (12SL intervals, axes, Sokolow index) onto standardised CMR indices
measured on the training segmentations. It holds two fits, with and without the
measurements, so that an ECG file without them (WFDB) is read by the second.
Its `ConditionReadout.condition` is the compact condition vector of the anatomy
prior (`cardiacnets.generation.anatomy_prior`).

With ``hidden_dim > 0`` each fit also has a small MLP that corrects the linear
estimate from the estimate itself, the demographics and the measurements
(`fit_correction`, trained on cross-fitted linear estimates): the simulator's,
and the body's, relations between body size, the 12SL numbers and the heart's
volumes are not linear (on the 0.1.4 build's version-3 cohort, a small MLP on the
device measurements and demographics alone reached validation LVEDV r 0.75 where a
ridge on them reached 0.65, and the ridge on everything, embedding included, 0.69).
The correction is kept only where its cross-fitted error is lower than the linear
fit's (`cross_fit`); otherwise it stays zero and the read-out is the ridge.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin found here by the pipeline loader)
from diffusers.configuration_utils import register_to_config
from torch import nn

#: Inputs the read-out can take, concatenated in this order.
READOUT_FEATURES = ("embedding", "token_mean", "demographics", "demographic_products", "measurements")


def ridge_loo(x: np.ndarray, y: np.ndarray, penalties) -> tuple[np.ndarray, float, float, float]:
    """Ridge regression with the penalty chosen by the exact leave-one-out error.

    Args:
        x: (n, d) features; y: (n,) targets.
        penalties: candidate penalties (on the centred features' Gram matrix).

    Returns:
        ``(weight, bias, penalty, loo_r2)``: the fit on all rows with the chosen penalty and its
        leave-one-out R² (from the hat matrix's diagonal, no refitting).
    """
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    best = None
    for penalty in penalties:
        shrink = s**2 / (s**2 + penalty)
        fitted = u @ (shrink * uty)
        leverage = (u**2) @ shrink + 1.0 / len(y)  # + the intercept's share
        loo = (yc - fitted) / np.clip(1.0 - leverage, 1e-6, None)
        error = float(np.mean(loo**2))
        if best is None or error < best[0]:
            best = (error, penalty)
    error, penalty = best
    weight = vt.T @ (s / (s**2 + penalty) * uty)
    return weight, float(y_mean - x_mean @ weight), float(penalty), 1.0 - error / float(np.var(y))


def readout_features(names: Sequence[str], embedding: torch.Tensor, tokens: torch.Tensor | None,
                     demographics: torch.Tensor | None, measurements: torch.Tensor | None) -> torch.Tensor:
    """The read-out's raw input features, concatenated in `READOUT_FEATURES` order.

    Args:
        names: feature names among `READOUT_FEATURES`.
        embedding: (B, embed_dim) pooled aligned ECG embedding.
        tokens: (B, T', token_dim) ECG encoder tokens (for ``token_mean``).
        demographics: (B, n) standardised demographics, 0 where missing.
        measurements: (B, m) standardised device measurements, 0 where missing.

    Returns:
        (B, width) in the embedding's dtype.
    """
    parts = []
    for name in READOUT_FEATURES:
        if name not in names:
            continue
        if name == "embedding":
            parts.append(embedding)
        elif name == "token_mean":
            if tokens is None:
                raise ValueError("the read-out uses the mean ECG token: pass tokens")
            parts.append(tokens.to(embedding.dtype).mean(dim=1))
        elif name == "measurements":
            if measurements is None:
                raise ValueError("the read-out uses device measurements: pass measurements (0 where missing)")
            parts.append(measurements.to(embedding.dtype))
        else:
            if demographics is None:
                raise ValueError(f"the read-out uses {name!r}: pass demographics")
            d = demographics.to(embedding.dtype)
            if name == "demographics":
                parts.append(d)
            else:
                rows, cols = torch.triu_indices(d.shape[1], d.shape[1], device=d.device)
                parts.append(d[:, rows] * d[:, cols])
    return torch.cat(parts, dim=-1)


class ConditionReadout(ModelMixin, ConfigMixin):
    """Frozen ridge read-out of the ECG features onto standardised CMR indices, and the prior's condition vector.

    Two fits share the same targets: ``full`` with the device measurements among its inputs and
    ``waveform`` without them; a subject whose ECG file has no measurements (WFDB) is read by the
    ``waveform`` fit. Weights are set by the training stage (`set_fit`).

    Args:
        feature_names: the ``full`` fit's inputs (`READOUT_FEATURES`).
        embed_dim, token_dim: the ECG encoder's embedding and token widths.
        demographics: ``{"columns", "mean", "std"}`` normaliser of the demographics (None: none).
        measurements: ``{"columns", "mean", "std"}`` normaliser of the device measurements (None: none).
        index_names: the CMR indices estimated, in order.
        index_mean, index_std: their training mean and standard deviation (estimates are standardised).
        hidden_dim: width of each fit's nonlinear correction (0: none, the linear read-out alone).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(self, feature_names: Sequence[str] = ("embedding",), embed_dim: int = 128, token_dim: int = 128,
                 demographics: dict | None = None, measurements: dict | None = None,
                 index_names: Sequence[str] = ("lvedv_ml",), index_mean: Sequence[float] = (0.0,),
                 index_std: Sequence[float] = (1.0,), hidden_dim: int = 0):
        super().__init__()
        unknown = [n for n in feature_names if n not in READOUT_FEATURES]
        if unknown or not feature_names:
            raise ValueError(f"feature_names must be names among {list(READOUT_FEATURES)}, got {list(feature_names)}")
        if "measurements" in feature_names and not measurements:
            raise ValueError("feature 'measurements' needs the measurements normaliser")
        if any(n in ("demographics", "demographic_products") for n in feature_names) and not demographics:
            raise ValueError("demographic features need the demographics normaliser")
        if not len(index_names) == len(index_mean) == len(index_std):
            raise ValueError("index_names, index_mean and index_std must have the same length")
        k = len(index_names)
        for fit, names in (("full", feature_names), ("waveform", self.waveform_names)):
            width = self.feature_width(names)
            self.register_buffer(f"{fit}_weight", torch.zeros(k, width))
            self.register_buffer(f"{fit}_bias", torch.zeros(k))
            # Lower Cholesky factor of the covariance of (true - estimate), standardised units, measured on
            # cross-fitted training estimates: how far the truth scatters around an estimate.
            self.register_buffer(f"{fit}_residual", torch.zeros(k, k))
        if hidden_dim < 0:
            raise ValueError(f"hidden_dim must be non-negative, got {hidden_dim}")
        if hidden_dim:
            self.full_mlp = correction_mlp(self.correction_width("full"), hidden_dim, k)
            self.waveform_mlp = correction_mlp(self.correction_width("waveform"), hidden_dim, k)
            self.requires_grad_(False)  # frozen like the linear fits; `fit_correction` trains a correction

    # --- sizes ----------------------------------------------------------------------------------------------------
    @property
    def waveform_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.config.feature_names if n != "measurements")

    @property
    def n_demographics(self) -> int:
        return len(self.config.demographics["columns"]) if self.config.demographics else 0

    @property
    def n_measurements(self) -> int:
        return len(self.config.measurements["columns"]) if self.config.measurements else 0

    @property
    def n_indices(self) -> int:
        return len(self.config.index_names)

    @property
    def condition_dim(self) -> int:
        """Width of the prior's condition: index estimates, demographics and flags, a measurements flag."""
        return self.n_indices + 2 * self.n_demographics + (1 if self.n_measurements else 0)

    def correction_width(self, fit: str) -> int:
        """Inputs of a fit's correction: the linear estimates, the demographics, the measurements (``full``)."""
        return self.n_indices + self.n_demographics + (self.n_measurements if fit == "full" else 0)

    def feature_width(self, names: Sequence[str]) -> int:
        c, n = self.config, self.n_demographics
        sizes = {"embedding": c.embed_dim, "token_mean": c.token_dim, "demographics": n,
                 "demographic_products": n * (n + 1) // 2, "measurements": self.n_measurements}
        return sum(sizes[name] for name in names)

    # --- raw values → standardised inputs ---------------------------------------------------------------------------
    @staticmethod
    def _standardise(values: dict | None, normaliser: dict | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n) standardised values (0 where missing) and presence flags from ``{column: (B,) values}``."""
        columns = normaliser["columns"]
        z = torch.zeros(batch, len(columns))
        present = torch.zeros(batch, len(columns), dtype=torch.bool)
        for j, (column, mean, std) in enumerate(zip(columns, normaliser["mean"], normaliser["std"])):
            if not values or column not in values:
                continue
            raw = torch.tensor(np.asarray(values[column], dtype=np.float64).reshape(-1), dtype=torch.float64)
            if raw.shape[0] != batch:
                raise ValueError(f"{column}: {raw.shape[0]} values for a batch of {batch}")
            ok = torch.isfinite(raw)
            z[:, j] = torch.where(ok, (raw - mean) / std, torch.zeros_like(raw)).float()
            present[:, j] = ok
        return z, present

    def inputs(self, batch: int, demographics: dict | None = None, measurements: dict | None = None
               ) -> dict[str, torch.Tensor]:
        """Standardised demographics and measurements of a batch from raw values by column.

        Args:
            batch: subjects.
            demographics: ``{column: (B,) raw values}`` (NaN where missing); None: all missing.
            measurements: the same for the device measurements.

        Returns:
            ``demographics``, ``demographics_present``, ``measurements``, ``measurements_present``
            (absent keys for a read-out without them).
        """
        out = {}
        if self.config.demographics:
            out["demographics"], out["demographics_present"] = self._standardise(
                demographics, self.config.demographics, batch)
        if self.config.measurements:
            out["measurements"], out["measurements_present"] = self._standardise(
                measurements, self.config.measurements, batch)
        return out

    # --- the fit ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_fit(self, fit: str, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the ``full`` or ``waveform`` fit: (k, width) and (k,) on the raw (unstandardised) features."""
        target_w, target_b = getattr(self, f"{fit}_weight"), getattr(self, f"{fit}_bias")
        if weight.shape != target_w.shape or bias.shape != target_b.shape:
            raise ValueError(f"{fit} fit must be {tuple(target_w.shape)} and {tuple(target_b.shape)}, got "
                             f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        target_w.copy_(weight)
        target_b.copy_(bias)

    @torch.no_grad()
    def set_residual(self, fit: str, residuals: torch.Tensor) -> None:
        """Set the ``full`` or ``waveform`` fit's residual spread from (n, k) cross-fitted residuals (truth − estimate).

        Rows with a missing value are left out; the covariance gets a small ridge so its Cholesky factor exists.
        """
        residuals = residuals[torch.isfinite(residuals).all(dim=1)].double()
        if len(residuals) < 2:
            raise ValueError("need at least 2 complete residual rows")
        covariance = torch.cov(residuals.T).reshape(self.n_indices, self.n_indices)
        covariance = covariance + 1e-6 * torch.eye(self.n_indices, dtype=covariance.dtype)
        getattr(self, f"{fit}_residual").copy_(torch.linalg.cholesky(covariance).float())

    def perturb(self, estimates: torch.Tensor, full: torch.Tensor, temperature: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Estimates plus ``temperature`` × a draw of the read-out's own residual scatter (per fit).

        At temperature 1 the perturbed estimates scatter around the estimate as the truth does (a calibrated
        draw of the indices given the ECG); at 0 they are the estimates (the conditional mean).
        """
        if temperature == 0:
            return estimates
        noise = torch.randn(estimates.shape, generator=generator, dtype=torch.float32).to(estimates.device)
        spread = torch.where(full[:, None], noise @ self.full_residual.T, noise @ self.waveform_residual.T)
        return estimates + temperature * spread

    def features(self, names: Sequence[str], embedding: torch.Tensor, tokens: torch.Tensor | None,
                 demographics: torch.Tensor | None = None, measurements: torch.Tensor | None = None) -> torch.Tensor:
        """`readout_features` of standardised inputs (missing values already at 0)."""
        return readout_features(names, embedding.float(), tokens, demographics, measurements)

    def estimate(self, embedding: torch.Tensor, tokens: torch.Tensor | None, demographics: torch.Tensor | None = None,
                 measurements: torch.Tensor | None = None,
                 measurements_present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised index estimates, (B, k), and which fit read each subject, (B,) bool (True: ``full``).

        A subject is read by the ``full`` fit when all its device measurements are present.
        """
        batch = embedding.shape[0]
        waveform = self.features(self.waveform_names, embedding, tokens, demographics)
        estimate = self.correct("waveform", waveform @ self.waveform_weight.T + self.waveform_bias, demographics)
        full = torch.zeros(batch, dtype=torch.bool, device=embedding.device)
        if "measurements" in self.config.feature_names and measurements is not None:
            full = measurements_present.all(dim=1) if measurements_present is not None else full | True
            features = self.features(self.config.feature_names, embedding, tokens, demographics, measurements)
            linear = features @ self.full_weight.T + self.full_bias
            estimate = torch.where(full[:, None], self.correct("full", linear, demographics, measurements), estimate)
        return estimate, full

    def correction_inputs(self, fit: str, linear: torch.Tensor, demographics: torch.Tensor | None = None,
                          measurements: torch.Tensor | None = None) -> torch.Tensor:
        """(B, `correction_width`) inputs of a fit's correction (missing demographics or measurements at 0)."""
        parts = [linear.float()]
        for width, values in ((self.n_demographics, demographics),
                              (self.n_measurements if fit == "full" else 0, measurements)):
            if width:
                parts.append(values.float() if values is not None else linear.new_zeros(linear.shape[0], width))
        return torch.cat(parts, dim=-1)

    def correct(self, fit: str, linear: torch.Tensor, demographics: torch.Tensor | None = None,
                measurements: torch.Tensor | None = None) -> torch.Tensor:
        """The linear estimate plus the fit's nonlinear correction (none without ``hidden_dim``)."""
        if not self.config.hidden_dim:
            return linear
        mlp = getattr(self, f"{fit}_mlp")
        return linear + mlp(self.correction_inputs(fit, linear, demographics, measurements)).to(linear.dtype)

    def condition(self, estimates: torch.Tensor, full: torch.Tensor, demographics: torch.Tensor | None = None,
                  demographics_present: torch.Tensor | None = None) -> torch.Tensor:
        """The prior's (B, `condition_dim`) condition vector from standardised estimates and demographics."""
        parts = [estimates.float()]
        if self.n_demographics:
            batch = estimates.shape[0]
            if demographics is None:
                demographics = torch.zeros(batch, self.n_demographics, device=estimates.device)
                demographics_present = torch.zeros_like(demographics, dtype=torch.bool)
            present = demographics_present.float()
            parts += [demographics.float() * present, present]
        if self.n_measurements:
            parts.append(full.float()[:, None])
        return torch.cat(parts, dim=-1)

    def to_units(self, estimates: torch.Tensor) -> dict[str, np.ndarray]:
        """Standardised estimates → ``{index name: (B,) values in the index's units}``."""
        c = self.config
        values = estimates.detach().float().cpu().numpy()
        return {name: values[:, j] * c.index_std[j] + c.index_mean[j] for j, name in enumerate(c.index_names)}


def fit_ridge(x: np.ndarray, targets: np.ndarray, penalties) -> tuple[np.ndarray, np.ndarray, list, list]:
    """Ridge fits of each target column (on its rows with a finite target), penalties by leave-one-out.

    Features are standardised for the fit and the standardisation folded into the weights.

    Args:
        x: (n, d) raw features; targets: (n, k), NaN where missing.
        penalties: candidate penalties per subject (the penalty on the standardised Gram matrix is
            this times the number of rows).

    Returns:
        ``(weight (k, d), bias (k,), chosen penalty per target, leave-one-out R² per target)`` on raw features.
    """
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (x - mean) / scale
    weights, biases, chosen, r2s = [], [], [], []
    for j in range(targets.shape[1]):
        ok = np.isfinite(targets[:, j])
        w, b, penalty, r2 = ridge_loo(z[ok], targets[ok, j], [p * int(ok.sum()) for p in penalties])
        weights.append(w / scale)
        biases.append(b - float((mean / scale) @ w))
        chosen.append(penalty / int(ok.sum()))
        r2s.append(r2)
    return np.stack(weights), np.array(biases), chosen, r2s


def correction_mlp(width: int, hidden: int, outputs: int) -> nn.Sequential:
    """Two hidden GELU layers; the output layer starts at zero (an untrained correction changes nothing)."""
    mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                        nn.Linear(hidden, outputs))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


def fit_correction(mlp: nn.Sequential, inputs: np.ndarray, residuals: np.ndarray, steps: int = 1000,
                   lr: float = 3e-3, weight_decay: float = 1e-2, seed: int = 0, holdout: float = 0.15,
                   check_every: int = 20) -> nn.Sequential:
    """Train a correction on (n, width) inputs onto (n, k) residuals (truth − linear estimate; NaN: missing).

    Full-batch AdamW on the squared error of the present targets, with early stopping: a seeded
    ``holdout`` share of the rows is left out, and the weights with the lowest error on it (checked
    every ``check_every`` steps; the zero correction counts as step 0) are kept. Without it, a 64-wide
    correction overfitted the 0.1.4 build's training split (train r 0.80, held-out 0.64 for LVEDV).
    The MLP is small and the rows thousands, so this takes seconds on a CPU.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mlp.requires_grad_(True)
    for layer in mlp:
        if isinstance(layer, nn.Linear) and layer is not mlp[-1]:
            layer.reset_parameters()
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    x = torch.as_tensor(inputs, dtype=torch.float32)
    y = torch.as_tensor(residuals, dtype=torch.float32)
    present = torch.isfinite(y)
    y = torch.where(present, y, torch.zeros_like(y))
    held = torch.zeros(len(x), dtype=torch.bool)
    held[torch.randperm(len(x), generator=generator)[:int(round(holdout * len(x)))]] = True

    def error(rows: torch.Tensor) -> torch.Tensor:
        mask = present[rows]
        return ((mlp(x[rows]) - y[rows]) ** 2 * mask).sum() / mask.sum().clamp_min(1)

    optimiser = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    best = (float("inf"), None)
    for step in range(steps + 1):
        if held.any() and step % check_every == 0:
            with torch.no_grad():
                held_error = float(error(held))
            if held_error < best[0]:
                best = (held_error, {k: v.clone() for k, v in mlp.state_dict().items()})
        if step == steps:
            break
        optimiser.zero_grad()
        error(~held).backward()
        optimiser.step()
        schedule.step()
    if best[1] is not None:
        mlp.load_state_dict(best[1])
    mlp.eval()
    return mlp.requires_grad_(False)


def nan_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over the rows where both are finite (NaN with fewer than 3 rows or a constant side)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def cross_fit(readout: ConditionReadout, fit: str, x: np.ndarray, targets: np.ndarray, folds: np.ndarray,
              penalties, demographics: torch.Tensor | None = None, measurements: torch.Tensor | None = None,
              correction_steps: int = 1000, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Fit one of a read-out's fits (``full`` or ``waveform``) on the training split, with cross-fitted estimates.

    The ridge is fitted on all rows (`fit_ridge`) and, for the cross-fitted estimates, on all folds but
    one. With ``hidden_dim``, the correction is cross-fitted the same way on the cross-fitted linear
    estimates; it is kept (refitted on all rows) only when its cross-fitted squared error is below the
    linear fit's, and otherwise left at zero. The residual spread is set from the final cross-fitted
    estimates.

    Args:
        readout: the read-out whose fit is set.
        fit: ``"full"`` or ``"waveform"``.
        x: (n, width) raw features of the fit; targets: (n, k) standardised indices, NaN where missing.
        folds: (n,) fold of each row.
        penalties: ridge penalties searched (`fit_ridge`).
        demographics, measurements: (n, ·) standardised inputs of the correction (0 where missing).
        correction_steps, seed: `fit_correction` settings.

    Returns:
        ``(cross-fitted estimates (n, k), report)``; the report has, per index, the chosen penalty,
        the leave-one-out R² and the cross-fitted r of the linear fit (and of the corrected one), and
        under ``"correction"`` whether the correction was kept and both cross-fitted squared errors.
    """
    weight, bias, chosen, r2 = fit_ridge(x, targets, penalties)
    readout.set_fit(fit, torch.as_tensor(weight, dtype=torch.float32), torch.as_tensor(bias, dtype=torch.float32))
    linear = np.zeros_like(targets)
    for k in np.unique(folds):
        held = folds == k
        w, b, _, _ = fit_ridge(x[~held], targets[~held], penalties)
        linear[held] = x[held] @ w.T + b
    names = readout.config.index_names
    report: dict = {name: {"penalty": chosen[j], "loo_r2": round(r2[j], 4),
                           "cross_fitted_r": round(nan_corr(linear[:, j], targets[:, j]), 4)}
                    for j, name in enumerate(names)}
    estimates = linear
    if readout.config.hidden_dim:
        inputs = readout.correction_inputs(fit, torch.as_tensor(linear, dtype=torch.float32), demographics,
                                           measurements).numpy()
        residual = targets - linear
        corrected = linear.copy()
        mlp = getattr(readout, f"{fit}_mlp")
        for k in np.unique(folds):
            held = folds == k
            part = fit_correction(correction_mlp(inputs.shape[1], readout.config.hidden_dim, len(names)),
                                  inputs[~held], residual[~held], correction_steps, seed=seed)
            with torch.no_grad():
                corrected[held] += part(torch.as_tensor(inputs[held])).double().numpy()
        errors = {"linear": float(np.nanmean((targets - linear) ** 2)),
                  "corrected": float(np.nanmean((targets - corrected) ** 2))}
        kept = errors["corrected"] < errors["linear"]
        if kept:
            fit_correction(mlp, inputs, residual, correction_steps, seed=seed)
            estimates = corrected
        else:
            with torch.no_grad():
                mlp[-1].weight.zero_()
                mlp[-1].bias.zero_()
        for j, name in enumerate(names):
            report[name]["corrected_cross_fitted_r"] = round(nan_corr(corrected[:, j], targets[:, j]), 4)
        report["correction"] = {"kept": kept, **{f"{k}_mse": round(v, 4) for k, v in errors.items()}}
    readout.set_residual(fit, torch.as_tensor(targets - estimates, dtype=torch.float32))
    return estimates, report
