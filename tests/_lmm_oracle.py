"""A dense, slow, obviously-correct LMM evaluator used to test the presentation layer.

Given a hand-built :class:`ModelFrame` and lme4's theta, it computes every field the fit
driver passes to :class:`LmmFit` with textbook dense linear algebra (lme4's penalised
least squares, Bates et al. 2015, eqs. 14-36). Feeding it the theta of a reference fit must
reproduce the reference's other numbers, which checks this oracle; the LmmFit built from it
then checks results.py, the summary and the export before the real engine exists, and
independently of it afterwards. Only for small data (it forms the full q x q system).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from multilevel.design import ModelFrame, NewDesign, ReTerm
from multilevel.results.lmm import LmmFit
from multilevel.covariance import lambda_blocks


def _full_z_lambda(frame: ModelFrame, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[slice]]:
    """Dense Z (n x q) and block-diagonal Λ (q x q); columns of term k ordered level-major."""
    n = frame.nobs
    lams = lambda_blocks(theta, [rt.n_terms for rt in frame.reterms])
    q = sum(rt.n_levels * rt.n_terms for rt in frame.reterms)
    Z = np.zeros((n, q))
    Lam = np.zeros((q, q))
    slices = []
    off = 0
    for rt, L in zip(frame.reterms, lams):
        s, ell = rt.n_terms, rt.n_levels
        for j in range(s):
            Z[np.arange(n), off + rt.refs * s + j] = rt.Z[:, j]
        Lam[off:off + ell * s, off:off + ell * s] = np.kron(np.eye(ell), L)
        slices.append(slice(off, off + ell * s))
        off += ell * s
    return Z, Lam, slices


def oracle_fit(frame: ModelFrame, theta, reml: bool, warnings: list[str] | None = None,
               **kw) -> LmmFit:
    """An :class:`LmmFit` at the given theta, every other field computed densely."""
    theta = np.asarray(theta, dtype=float)
    y, X = frame.y, frame.X
    n, p = X.shape
    w = np.ones(n) if frame.weights is None else np.asarray(frame.weights, dtype=float)
    off = np.zeros(n) if frame.offset is None else frame.offset
    sw = np.sqrt(w)
    Z, Lam, slices = _full_z_lambda(frame, theta)
    ZL = (Z @ Lam) * sw[:, None]
    Xw = X * sw[:, None]
    yw = (y - off) * sw
    q = ZL.shape[1]
    A = ZL.T @ ZL + np.eye(q)
    LZ = np.linalg.cholesky(A)
    RZX = np.linalg.solve(LZ, ZL.T @ Xw)
    cu = np.linalg.solve(LZ, ZL.T @ yw)
    XtX = Xw.T @ Xw - RZX.T @ RZX
    RX = np.linalg.cholesky(XtX)  # lower: XtX = RX RX'
    beta = np.linalg.solve(XtX, Xw.T @ yw - RZX.T @ cu)
    u = np.linalg.solve(LZ.T, cu - RZX @ beta)
    resid = yw - Xw @ beta - ZL @ u
    pwrss = float(resid @ resid + u @ u)
    logdetZ = 2.0 * np.sum(np.log(np.diag(LZ)))
    logdetX = 2.0 * np.sum(np.log(np.diag(RX)))
    sumlogw = float(np.sum(np.log(w)))
    dev_ml = logdetZ + n * (1.0 + math.log(2.0 * math.pi * pwrss / n)) - sumlogw
    if reml:
        crit = logdetZ + logdetX + (n - p) * (1.0 + math.log(2.0 * math.pi * pwrss / (n - p))) - sumlogw
        sigma = math.sqrt(pwrss / (n - p))
    else:
        crit = dev_ml
        sigma = math.sqrt(pwrss / n)
    vcov = sigma**2 * np.linalg.inv(XtX)
    bfull = Lam @ u
    b = [bfull[sl].reshape(rt.n_levels, rt.n_terms) for rt, sl in zip(frame.reterms, slices)]
    fitted = X @ beta + Z @ bfull + off

    def condvar() -> list[np.ndarray]:
        V = sigma**2 * Lam @ np.linalg.inv(A) @ Lam.T
        out = []
        for rt, sl in zip(frame.reterms, slices):
            s = rt.n_terms
            Vk = V[sl, sl]
            out.append(np.stack([Vk[i * s:(i + 1) * s, i * s:(i + 1) * s] for i in range(rt.n_levels)]))
        return out

    all_warnings = list(frame.warnings) + list(warnings or [])
    diag_small = any(np.any(np.diag(L) < 1e-4) for L in lambda_blocks(theta, [rt.n_terms for rt in frame.reterms]))
    if diag_small and not any("singular" in m for m in all_warnings):
        all_warnings.append("boundary (singular) fit: a variance is estimated as 0 or a correlation as ±1; see help(multilevel.SingularFitWarning)")
    return LmmFit(frame=frame, reml=reml, theta=theta, beta=beta, vcov=vcov, sigma=sigma, b=b,
                  condvar=condvar(), loglik=-crit / 2.0, deviance_ml=dev_ml,
                  reml_criterion=crit if reml else None, fitted=fitted, converged=True,
                  warnings=all_warnings,
                  optinfo={"optimizer": "bobyqa", "feval": 0, "fit_log": [], "messages": list(all_warnings),
                           "time": 0.0}, **kw)


# --- hand-built model frames for a few reference cases -----------------------------------


class HandFrame(ModelFrame):
    """A ModelFrame with a minimal ``new_design`` for data with the same simple layout:
    X and each term's Z are built by ``builder(df) -> (X, [Z_k])``; levels are looked up by
    the label function ``labels[k](df)``. Enough to test predict() without the real design."""

    def __init__(self, *args, builder=None, labels=None, **kw):
        super().__init__(*args, **kw)
        self._builder = builder
        self._labels = labels

    def new_design(self, newdata, re_form=None, allow_new_levels=False) -> NewDesign:
        X, Zs = self._builder(newdata)
        if re_form is not None and re_form.replace(" ", "") == "~0":
            keep: list[int] = []
        else:
            keep = list(range(len(self.reterms)))
        refs, Z = [], []
        for k in keep:
            rt = self.reterms[k]
            pos = {lv: i for i, lv in enumerate(rt.levels)}
            r = np.array([pos.get(str(v), -1) for v in self._labels[k](newdata)], dtype=np.int32)
            if (r < 0).any() and not allow_new_levels:
                raise ValueError("new levels")
            refs.append(r)
            Z.append(Zs[k])
        return NewDesign(X=X, offset=None, term_index=keep, refs=refs, Z=Z)


def sleepstudy_frame(df: pd.DataFrame, kind: str = "slope") -> HandFrame:
    """``Reaction ~ Days + (Days | Subject)`` (kind "slope"), ``(Days || Subject)`` ("dblbar")
    or ``(1 | Subject)`` ("intercept") on the sleepstudy data."""
    n = len(df)

    def builder(d):
        one = np.ones(len(d))
        days = d["Days"].to_numpy(float)
        X = np.column_stack([one, days])
        if kind == "slope":
            return X, [np.column_stack([one, days])]
        if kind == "dblbar":
            return X, [one[:, None], days[:, None]]
        return X, [one[:, None]]

    X, Zs = builder(df)
    levels = [str(v) for v in df["Subject"].cat.categories]
    refs = df["Subject"].cat.codes.to_numpy(np.int32)
    if kind == "slope":
        rts = [ReTerm("Subject", ["(Intercept)", "Days"], levels, refs, Zs[0])]
        formula = "Reaction ~ Days + (Days | Subject)"
    elif kind == "dblbar":
        rts = [ReTerm("Subject", ["(Intercept)"], levels, refs, Zs[0]),
               ReTerm("Subject", ["Days"], levels, refs, Zs[1])]
        formula = "Reaction ~ Days + (Days || Subject)"
    else:
        rts = [ReTerm("Subject", ["(Intercept)"], levels, refs, Zs[0])]
        formula = "Reaction ~ Days + (1 | Subject)"
    lab = lambda d: d["Subject"].astype(str).to_numpy()  # noqa: E731
    return HandFrame(formula, "Reaction", df["Reaction"].to_numpy(float), X, ["(Intercept)", "Days"], rts,
                     rows=np.arange(n, dtype=np.int64), builder=builder, labels=[lab] * len(rts))


def dyestuff_frame(df: pd.DataFrame) -> HandFrame:
    """``Yield ~ 1 + (1 | Batch)``."""
    n = len(df)

    def builder(d):
        one = np.ones((len(d), 1))
        return one, [one]

    X, Zs = builder(df)
    rt = ReTerm("Batch", ["(Intercept)"], [str(v) for v in df["Batch"].cat.categories],
                df["Batch"].cat.codes.to_numpy(np.int32), Zs[0])
    return HandFrame("Yield ~ 1 + (1 | Batch)", "Yield", df["Yield"].to_numpy(float), X, ["(Intercept)"], [rt],
                     rows=np.arange(n, dtype=np.int64), builder=builder,
                     labels=[lambda d: d["Batch"].astype(str).to_numpy()])


def pastes_frame(df: pd.DataFrame, levels_cask_batch: list[str]) -> HandFrame:
    """``strength ~ 1 + (1 | batch/cask)``: terms ``cask:batch`` (30 levels) then ``batch``."""
    n = len(df)
    lab_cb = lambda d: (d["cask"].astype(str) + ":" + d["batch"].astype(str)).to_numpy()  # noqa: E731
    lab_b = lambda d: d["batch"].astype(str).to_numpy()  # noqa: E731

    def builder(d):
        one = np.ones((len(d), 1))
        return one, [one, one]

    X, Zs = builder(df)
    pos = {lv: i for i, lv in enumerate(levels_cask_batch)}
    rts = [ReTerm("cask:batch", ["(Intercept)"], list(levels_cask_batch),
                  np.array([pos[v] for v in lab_cb(df)], dtype=np.int32), Zs[0]),
           ReTerm("batch", ["(Intercept)"], [str(v) for v in df["batch"].cat.categories],
                  df["batch"].cat.codes.to_numpy(np.int32), Zs[1])]
    return HandFrame("strength ~ 1 + (1 | batch/cask)", "strength", df["strength"].to_numpy(float), X,
                     ["(Intercept)"], rts, rows=np.arange(n, dtype=np.int64), builder=builder,
                     labels=[lab_cb, lab_b])


def cbpp_weighted_frame(df: pd.DataFrame) -> HandFrame:
    """``propinc ~ period + (1 | herd)`` with prior weights ``size``."""
    n = len(df)
    periods = list(df["period"].cat.categories)

    def builder(d):
        one = np.ones(len(d))
        per = d["period"].astype(str).to_numpy()
        X = np.column_stack([one] + [(per == lv).astype(float) for lv in periods[1:]])
        return X, [one[:, None]]

    X, Zs = builder(df)
    rt = ReTerm("herd", ["(Intercept)"], [str(v) for v in df["herd"].cat.categories],
                df["herd"].cat.codes.to_numpy(np.int32), Zs[0])
    y = (df["incidence"] / df["size"]).to_numpy(float)
    return HandFrame("propinc ~ period + (1 | herd)", "propinc", y, X,
                     ["(Intercept)"] + [f"period{lv}" for lv in periods[1:]], [rt],
                     weights=df["size"].to_numpy(float), rows=np.arange(n, dtype=np.int64), builder=builder,
                     labels=[lambda d: d["herd"].astype(str).to_numpy()])
