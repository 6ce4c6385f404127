"""Surrogate accuracy predictor that pre-screens offspring (after the authors' NSGANetV2, ECCV
2020).

A ridge regression on the one-hot encoding of the genes, fitted on every evaluated architecture.
Each generation the search draws several candidate offspring per slot, predicts their scores
(params and MAdds are exact and cheap), keeps the most promising one per slot, and evaluates only
those; the rank correlation (Kendall's tau) between the predictions and the measured scores of the
evaluated offspring is reported every generation, so a user sees whether the predictor helps.
"""
from typing import Optional, Sequence

import numpy as np


def one_hot(X: np.ndarray, xu: np.ndarray) -> np.ndarray:
    """Genes as one-hot columns (a column per choice of each gene)."""
    X = np.atleast_2d(np.asarray(X, dtype=int))
    columns = [(X[:, i:i + 1] == np.arange(xu[i] + 1)[None]).astype(float)
               for i in range(X.shape[1]) if xu[i] > 0]
    return np.concatenate(columns, axis=1) if columns else np.zeros((len(X), 0))


class RidgeSurrogate:
    """Ridge regression of the score on the one-hot genes.

    Args:
        xu (np.ndarray): Upper bounds of the genes (the space's ``xu``).
        alpha (float): L2 penalty. Default: 1.0.
        min_samples (int): Fewer evaluated points than this: not fitted, no prediction.
            Default: 8.
    """

    def __init__(self, xu: np.ndarray, alpha: float = 1.0, min_samples: int = 8):
        self.xu = np.asarray(xu, dtype=int)
        self.alpha = alpha
        self.min_samples = min_samples
        self.coef: Optional[np.ndarray] = None
        self.mean = 0.0

    @property
    def fitted(self) -> bool:
        return self.coef is not None

    def fit(self, X: np.ndarray, y: Sequence[float]) -> 'RidgeSurrogate':
        y = np.asarray(y, dtype=float)
        keep = np.isfinite(y)
        if keep.sum() < self.min_samples:
            self.coef = None
            return self
        A, y = one_hot(np.asarray(X)[keep], self.xu), y[keep]
        self.mean = float(y.mean())
        self.coef = np.linalg.solve(A.T @ A + self.alpha * np.eye(A.shape[1]),
                                    A.T @ (y - self.mean))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError('the surrogate is not fitted yet')
        return one_hot(X, self.xu) @ self.coef + self.mean


def kendall_tau(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists (nan with fewer than two finite pairs)."""
    from scipy.stats import kendalltau
    a, b = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 2:
        return float('nan')
    return float(kendalltau(a[keep], b[keep]).statistic)
