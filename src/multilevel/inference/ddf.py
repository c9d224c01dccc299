"""Denominator degrees of freedom for the fixed effects of a linear mixed model.

Satterthwaite (as lmerTest 3.1)
    The variance parameters are ``varpar = (theta, sigma)``. The REML criterion (ML deviance
    for ML fits) as a function of varpar, with beta profiled out, is
    ``log|L_Z|^2 + PWRSS/sigma^2 + n log(2 pi sigma^2)`` (+ ``log|R_X|^2 - p log(2 pi sigma^2)``
    for REML): lmerTest's ``devfun_vp``. Its Hessian H at the estimates gives the asymptotic
    covariance of varpar, ``A = 2 H^+`` (Moore-Penrose inverse over eigenvalues > 1e-8), and
    the Jacobian of ``vcov(beta) = sigma^2 (R_X' R_X)^-1`` w.r.t. varpar gives matrices J_i.
    For a contrast L: ``var = L'VL``, ``g_i = L'J_iL``, ``df = 2 var^2 / g'Ag``. Both
    derivatives are numerical, with the Richardson extrapolation of R's numDeriv (d = 1e-4,
    4 halvings), as lmerTest computes them, so the df agree with lmerTest's to ~1e-6.

Kenward-Roger (as pbkrtest 0.5)
    Var(y) is written ``Sigma = sum_i gamma_i G_i`` over the covariance parameters (each
    entry of each random-effect covariance matrix, then sigma^2 with G = I: like pbkrtest
    this ignores prior weights in Sigma). From Sigma^-1 (dense, n x n) come P_i, Q_ij, the
    expected information of gamma and its inverse W; the adjusted covariance of beta is
    ``Phi_A = Phi + 2 Phi U Phi`` and the df for L follow Kenward & Roger (1997) (pbkrtest's
    ``Lb_ddf``; F statistics scaled as in ``KRmodcomp``). REML fits only.

``coef_table(fit, ddf)`` is the t table of the fixed effects; ``anova_terms(fit, ddf)`` the
type III F tests of the terms (lmerTest's ``anova(fit)``).
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
# the t / F / normal tails from scipy.special (scipy.stats wraps the same functions and costs
# 0.4 s to import)
from scipy import linalg, special

from multilevel.errors import ModelSpecError, MultilevelError
from multilevel.covariance import ParameterMap
from multilevel.inference._common import is_glmm, lmm_problem, pwrss_from_residuals, require_unconstrained

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["coef_table", "anova_terms", "satterthwaite", "kenward_roger", "contest"]

#: largest number of observations for the dense n x n Kenward-Roger computations
KR_MAX_NOBS = 4000


# --- numerical derivatives (R's numDeriv, method "Richardson") --------------------------

_ZERO_TOL = math.sqrt(np.finfo(float).eps / 7e-7)
#: first relative step of the Richardson extrapolation. numDeriv uses 1e-4, which on our
#: objective gives second differences at steps of 1e-5 whose rounding error reaches 0.1%.
#: Four halvings from 4e-3 keep the truncation error at O(h^8) and the rounding error near
#: 1e-6 relative (together with the PWRSS recomputed from residuals, see
#: ``pwrss_from_residuals``); the df then agree with lmerTest's to ~3e-4 or better.
DERIV_STEP = 4e-3


def _steps(x: np.ndarray, d: float = DERIV_STEP, eps: float = DERIV_STEP) -> np.ndarray:
    return np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)


def _richardson(a: np.ndarray, r: int) -> np.ndarray:
    """Richardson extrapolation over the last axis (step halved each time, error O(h^2))."""
    a = a.copy()
    for m in range(1, r):
        a = (a[..., 1:r + 1 - m] * 4.0**m - a[..., : r - m]) / (4.0**m - 1.0)
    return a[..., 0]


def hessian(f, x: np.ndarray, r: int = 4) -> np.ndarray:
    """numDeriv::hessian (genD) of a scalar function."""
    x = np.asarray(x, float)
    k = x.size
    f0 = f(x)
    h0 = _steps(x)
    diag = np.empty(k)
    for i in range(k):
        h = h0.copy()
        hd = np.empty(r)
        for m in range(r):
            e = np.zeros(k)
            e[i] = h[i]
            f1, f2 = f(x + e), f(x - e)
            hd[m] = (f1 - 2 * f0 + f2) / h[i] ** 2
            h = h / 2
        diag[i] = _richardson(hd, r)
    H = np.diag(diag)
    for i in range(k):
        for j in range(i):
            h = h0.copy()
            hd = np.empty(r)
            for m in range(r):
                e = np.zeros(k)
                e[i] += h[i]
                e[j] += h[j]
                f1, f2 = f(x + e), f(x - e)
                hd[m] = (f1 - 2 * f0 + f2 - diag[i] * h[i] ** 2 - diag[j] * h[j] ** 2) / (2 * h[i] * h[j])
                h = h / 2
            H[i, j] = H[j, i] = _richardson(hd, r)
    return H


def jacobian(f, x: np.ndarray, r: int = 4) -> np.ndarray:
    """numDeriv::jacobian of a vector function: (len(f(x)), len(x))."""
    x = np.asarray(x, float)
    k = x.size
    h0 = _steps(x)
    cols = []
    for i in range(k):
        h = h0.copy()
        a = []
        for m in range(r):
            e = np.zeros(k)
            e[i] = h[i]
            a.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h[i]))
            h = h / 2
        cols.append(_richardson(np.stack(a, axis=-1), r))
    return np.stack(cols, axis=-1)


# --- Satterthwaite ----------------------------------------------------------------------


@dataclass
class SatterthwaiteInfo:
    """lmerTest's slots: vcov(beta), the covariance of varpar = (theta, sigma) and the
    Jacobian matrices d vcov(beta) / d varpar_i."""

    vcov_beta: np.ndarray
    vcov_varpar: np.ndarray
    jac: list[np.ndarray]
    hessian_eigenvalues: np.ndarray


_SATT: "weakref.WeakKeyDictionary[Any, SatterthwaiteInfo]" = weakref.WeakKeyDictionary()
_KR: "weakref.WeakKeyDictionary[Any, KenwardRogerInfo]" = weakref.WeakKeyDictionary()


def satterthwaite(fit: AnyFit) -> SatterthwaiteInfo:
    """The ingredients of Satterthwaite's df for a fit (computed once, cached)."""
    hit = _SATT.get(fit)
    if hit is not None:
        return hit
    prob = lmm_problem(fit, "Satterthwaite's df")
    info = satterthwaite_at(prob, np.asarray(fit.getme("theta"), float), float(fit.getme("sigma")),
                            np.asarray(fit.getme("vcov"), float))
    _SATT[fit] = info
    return info


def satterthwaite_at(prob: Any, theta: np.ndarray, sigma: float, vcov: np.ndarray,
                     richardson: int = 4, exact_pwrss: bool = True) -> SatterthwaiteInfo:
    """:func:`satterthwaite` of an engine problem at its optimum (theta, sigma, vcov(beta)).

    ``richardson`` is the number of step halvings of the numerical derivatives (4: lmerTest's
    numbers to ~1e-6; 1: plain central differences, about 4 times fewer evaluations, df to
    ~1e-4 relative, what simulation studies such as ``power()`` use) and ``exact_pwrss``
    recomputes the PWRSS from the residuals (needed for the small steps of the extrapolation).
    """
    n, p, reml = prob.n, prob.p, prob.reml
    # varpar = (covariance parameters, sigma): θ for unstructured and diagonal terms, the
    # structures' own parameters for cs() / ar1() (ParameterMap; Satterthwaite's df are
    # invariant to how the covariance is parametrised, but not to constraining it)
    pm = getattr(prob, "pmap", None) or ParameterMap(prob.input.structures)
    cache: dict[bytes, dict] = {}

    def sol(theta: np.ndarray) -> dict:
        key = np.asarray(theta, float).tobytes()
        s = cache.get(key)
        if s is None:
            s = prob.solution(theta)
            if exact_pwrss:
                s["pwrss"] = pwrss_from_residuals(prob, theta, s)
            cache[key] = s
        return s

    def devfun_vp(vp: np.ndarray) -> float:
        s2 = vp[-1] ** 2
        s = sol(pm.to_theta(vp[:-1]))
        dev = s["ldl2"] + s["pwrss"] / s2 + n * math.log(2 * math.pi * s2)
        if reml:
            dev += s["ldrx2"] - p * math.log(2 * math.pi * s2)
        return dev

    def covbeta(vp: np.ndarray) -> np.ndarray:
        s = sol(pm.to_theta(vp[:-1]))
        # solution's vcov is sigma_hat(theta)^2 (RX'RX)^-1; rescale to the given sigma
        return (s["vcov"] * (vp[-1] ** 2 / s["sigma"] ** 2)).ravel()

    vp0 = np.concatenate([pm.to_par(np.asarray(theta, float)), [float(sigma)]])
    H = hessian(devfun_vp, vp0, r=richardson)
    evals, evecs = np.linalg.eigh(H)
    pos = evals > 1e-8
    hinv = (evecs[:, pos] / evals[pos]) @ evecs[:, pos].T
    J = jacobian(covbeta, vp0, r=richardson)
    jac = [J[:, i].reshape(p, p) for i in range(J.shape[1])]
    return SatterthwaiteInfo(np.asarray(vcov, float), 2.0 * hinv, jac, evals[::-1])


def _satt_1d(info: SatterthwaiteInfo, L: np.ndarray) -> tuple[float, float]:
    """(variance of L'beta, Satterthwaite df) for one contrast."""
    var = float(L @ info.vcov_beta @ L)
    g = np.array([L @ J @ L for J in info.jac])
    denom = float(g @ info.vcov_varpar @ g)
    df = 2.0 * var**2 / denom if denom > 0 else np.inf
    return var, df


def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: df of a mean of q squared t statistics."""
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - nu.size)


# --- Kenward-Roger ----------------------------------------------------------------------


@dataclass
class KenwardRogerInfo:
    """pbkrtest's ``vcovAdj``: adjusted covariance ``vcov_adj`` and its attributes P, W."""

    vcov: np.ndarray
    vcov_adj: np.ndarray
    P: list[np.ndarray]
    W: np.ndarray


def kenward_roger(fit: AnyFit) -> KenwardRogerInfo:
    """Kenward-Roger adjusted covariance of the fixed effects (pbkrtest's ``vcovAdj``)."""
    hit = _KR.get(fit)
    if hit is not None:
        return hit
    prob = lmm_problem(fit, "Kenward-Roger's method")
    require_unconstrained(fit, "Kenward-Roger's method")
    if not prob.reml:
        raise ModelSpecError("Kenward-Roger's method is only available for REML model fits "
                             "(refit with reml=True)")
    frame = fit.frame
    n = prob.n
    if n > KR_MAX_NOBS:
        raise ModelSpecError(f"Kenward-Roger works with dense {n} x {n} matrices here; with more "
                             f"than {KR_MAX_NOBS} observations use ddf='satterthwaite'")
    X = np.asarray(frame.X, float)
    Phi = np.asarray(fit.getme("vcov"), float)
    sigma2 = float(fit.getme("sigma")) ** 2
    # U blocks: one per (random-effect term, column) -> n x n_levels, U[i, level_i] = z_i
    ublocks: list[slice] = []
    cols = []
    start = 0
    params: list[list[tuple]] = []
    gamma: list[float] = []
    covs = [vb.cov for vb in fit.varcorr]
    for k, rt in enumerate(frame.reterms):
        nl = rt.n_levels
        idx = []
        for r in range(rt.n_terms):
            U = np.zeros((n, nl))
            U[np.arange(n), rt.refs] = rt.Z[:, r]
            cols.append(U)
            idx.append(slice(start, start + nl))
            start += nl
        ublocks.extend(idx)
        cov = covs[k]
        s = rt.n_terms
        for c in range(s):
            for r in range(c, s):
                gamma.append(float(cov[r, c]))
                if r == c:
                    params.append([(idx[r], idx[r])])
                else:
                    params.append([(idx[r], idx[c]), (idx[c], idx[r])])
    gamma.append(sigma2)
    params.append([("I", "I")])
    A = np.hstack(cols) if cols else np.zeros((n, 0))
    # Sigma = sum_i gamma_i G_i
    Sigma = sigma2 * np.eye(n)
    for g, pairs in zip(gamma[:-1], params[:-1]):
        for a, b in pairs:
            Sigma += g * (A[:, a] @ A[:, b].T)
    cf = linalg.cho_factor(Sigma, lower=True)
    Winv = linalg.cho_solve(cf, np.eye(n))
    Winv = 0.5 * (Winv + Winv.T)
    WX = Winv @ X
    WA = Winv @ A
    AWA = A.T @ WA
    AWX = A.T @ WX

    def C(a, b):
        if a == "I" and b == "I":
            return Winv
        if a == "I":
            return WA[:, b]
        if b == "I":
            return WA[:, a].T
        return AWA[a, b]

    def M(a):
        return WX if a == "I" else AWX[a]

    m = len(params)
    PP = []
    for pairs in params:
        Pm = np.zeros((X.shape[1], X.shape[1]))
        for a, b in pairs:
            Pm -= M(a).T @ M(b)
        PP.append(0.5 * (Pm + Pm.T))
    QQ: dict[tuple[int, int], np.ndarray] = {}
    K = np.zeros((m, m))
    for r in range(m):
        for s_ in range(r, m):
            Q = np.zeros_like(PP[0])
            tr = 0.0
            for a, b in params[r]:
                for c, d in params[s_]:
                    Cbc = C(b, c)
                    Q += M(a).T @ Cbc @ M(d)
                    tr += float(np.sum(Cbc * C(d, a).T))
            QQ[(r, s_)] = Q
            K[r, s_] = K[s_, r] = tr
    IE2 = np.zeros((m, m))
    for r in range(m):
        PhiP = Phi @ PP[r]
        for s_ in range(r, m):
            IE2[r, s_] = IE2[s_, r] = (K[r, s_] - 2 * np.sum(Phi * QQ[(r, s_)])
                                       + np.sum(PhiP * (PP[s_] @ Phi)))
    condi = np.min(np.abs(np.linalg.eigvalsh(IE2)))
    WW = 2 * (np.linalg.inv(IE2) if condi > 1e-10 else np.linalg.pinv(IE2))
    WW = 0.5 * (WW + WW.T)
    UU = np.zeros_like(Phi)
    for r in range(m - 1):
        for s_ in range(r + 1, m):
            UU += WW[r, s_] * (QQ[(r, s_)] - PP[r] @ Phi @ PP[s_])
    UU = UU + UU.T
    for r in range(m):
        UU += WW[r, r] * (QQ[(r, r)] - PP[r] @ Phi @ PP[r])
    PhiA = Phi + 2 * Phi @ UU @ Phi
    info = KenwardRogerInfo(Phi, PhiA, PP, WW)
    _KR[fit] = info
    return info


def _div_zero(x: float, y: float, tol: float = 1e-14) -> float:
    return 1.0 if abs(x) < tol and abs(y) < tol else x / y


def _kr_adjust(info: KenwardRogerInfo, L: np.ndarray) -> tuple[float, float, float]:
    """pbkrtest's ``.KR_adjust`` / ``Lb_ddf`` for the q x p restriction matrix L:
    returns (ddf, F scaling, q)."""
    L = np.atleast_2d(L)
    V0 = info.vcov
    Theta = L.T @ np.linalg.solve(L @ V0 @ L.T, L)
    TV = Theta @ V0
    A1 = A2 = 0.0
    m = len(info.P)
    us = [TV @ P @ V0 for P in info.P]
    for i in range(m):
        for j in range(i, m):
            e = 1.0 if i == j else 2.0
            ui, uj = us[i], us[j]
            A1 += e * info.W[i, j] * (np.trace(ui) * np.trace(uj))
            A2 += e * info.W[i, j] * np.sum(ui * uj.T)
    q = float(np.linalg.matrix_rank(L))
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c1 = g / (3 * q + 2 * (1 - g))
    c2 = (q - g) / (3 * q + 2 * (1 - g))
    c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
    V0_ = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0_ = 0.0 if abs(V0_) < 1e-10 else V0_
    rho = 1 / q * _div_zero(1 - A2 / q, V1) ** 2 * V0_ / V2
    df2 = 4 + (q + 2) / (q * rho - 1)
    fscale = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
    return float(df2), float(fscale), q


# --- t tables ---------------------------------------------------------------------------

_DDF_ALIASES = {
    "satterthwaite": "satterthwaite", "satt": "satterthwaite", "s": "satterthwaite",
    "kenward-roger": "kenward-roger", "kenward_roger": "kenward-roger", "kr": "kenward-roger",
    "kenwardroger": "kenward-roger", "residual": "residual", "none": None, "z": None,
    "normal": None, "wald": None,
}


def _ddf_method(ddf: Any) -> str | None:
    if ddf is None:
        return None
    key = str(ddf).strip().lower().replace(" ", "")
    if key not in _DDF_ALIASES:
        raise ModelSpecError(f"ddf must be 'satterthwaite', 'kenward-roger', 'residual' or None, "
                             f"not {ddf!r}")
    return _DDF_ALIASES[key]


def contest(fit: AnyFit, L: Any, ddf: str | None = "satterthwaite") -> pd.DataFrame:
    """Test of one contrast L'beta = 0 (lmerTest's ``contest1D``): estimate, se, df, t, p."""
    L = np.asarray(L, float).ravel()
    beta = np.asarray(fit.getme("beta"), float)
    if L.size != beta.size:
        raise ModelSpecError(f"the contrast has {L.size} entries, the model {beta.size} fixed effects")
    est, se, df = _contrast(fit, L, _ddf_method(ddf))
    t = est / se if se > 0 else np.nan
    p = 2 * (special.stdtr(df, -abs(t)) if np.isfinite(df) else special.ndtr(-abs(t)))
    return pd.DataFrame({"estimate": [est], "se": [se], "df": [df], "t": [t], "p": [p]})


def _contrast(fit: AnyFit, L: np.ndarray, method: str | None) -> tuple[float, float, float]:
    beta = np.asarray(fit.getme("beta"), float) if hasattr(fit, "_beta") else np.asarray(fit.fixef, float)
    est = float(L @ beta)
    V = np.asarray(fit.vcov, float)
    if method == "satterthwaite":
        var, df = _satt_1d(satterthwaite(fit), L)
        return est, math.sqrt(var), df
    if method == "kenward-roger":
        info = kenward_roger(fit)
        var = float(L @ info.vcov_adj @ L)
        df, _, _ = _kr_adjust(info, L[None, :])
        return est, math.sqrt(var), df
    var = float(L @ V @ L)
    if method == "residual":
        return est, math.sqrt(var), float(fit.nobs - beta.size)
    return est, math.sqrt(var), np.inf


def coef_table(fit: AnyFit, ddf: str | None = "satterthwaite") -> pd.DataFrame:
    """Fixed effects with standard errors, df, t statistics and two-sided p values.

    ddf:
      ``"satterthwaite"`` (default): lmerTest's Satterthwaite df (``summary(lmerTest fit)``);
      ``"kenward-roger"``: pbkrtest's Kenward-Roger df, with the KR-adjusted standard errors
          (REML fits; dense n x n computations, up to 4000 observations);
      ``"residual"``: df = nobs - number of fixed effects for every coefficient;
      ``None``: z tests (df = inf), lme4's Wald statistics.
    GLMM fits always get z tests (df = inf).

    Returns a DataFrame indexed by coefficient name with columns ``estimate``, ``se``, ``df``,
    ``t`` and ``p`` (``t`` holds the z statistic when df is infinite).

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> ml.inference.coef_table(fit)["df"].round(1).tolist()
    [17.0, 17.0]
    """
    method = _ddf_method(ddf)
    if is_glmm(fit):
        method = None
    names = list(fit.fixef.index)
    beta = np.asarray(fit.fixef, float)
    p = len(beta)
    rows = []
    for j in range(p):
        L = np.zeros(p)
        L[j] = 1.0
        est, se, df = _contrast(fit, L, method)
        rows.append((est, se, df))
    tab = pd.DataFrame(rows, index=pd.Index(names), columns=["estimate", "se", "df"])
    with np.errstate(divide="ignore", invalid="ignore"):
        tab["t"] = tab["estimate"] / tab["se"]
    df = tab["df"].to_numpy(float)
    t = np.abs(tab["t"].to_numpy(float))
    tab["p"] = np.where(np.isfinite(df), 2 * special.stdtr(np.where(np.isfinite(df), df, 1.0), -t),
                        2 * special.ndtr(-t))
    tab.attrs["ddf"] = method or "z"
    tab.attrs["statistic"] = "t" if method else "z"
    return tab


# --- type III contrasts (lmerTest) ------------------------------------------------------


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    mx = np.nanmax(np.abs(x)) if x.size else 0.0
    if mx > 0:
        return np.round(x, max(0, digits - int(math.ceil(math.log10(mx)))))
    return np.round(x, digits)


def _doolittle_rows(X: np.ndarray) -> np.ndarray:
    """t(L) of the Doolittle factorisation X'X = L D L' (lmerTest's type I contrasts)."""
    R = np.linalg.cholesky(X.T @ X).T  # upper, X'X = R'R, R = D^1/2 L'
    return R / np.diag(R)[:, None]


def _term_structure(frame: Any) -> tuple[list[str], dict[str, list[int]], dict[str, set], dict[str, set]]:
    """Term labels, their columns of X, their variables and their numeric variables."""
    labels = list(frame.term_labels)
    assign = np.asarray(frame.assign)
    cols = {lab: [int(j) for j in np.flatnonzero(assign == k + 1)] for k, lab in enumerate(labels)}
    spec = frame.spec
    plan_terms = spec.plan.terms
    scope_vars = spec.fixed.vars
    variables, numerics = {}, {}
    for lab, codes in zip(labels, plan_terms):
        keys = {key for key, _ in codes}
        variables[lab] = keys
        numerics[lab] = {k for k in keys if not scope_vars[k].is_factor}
    return labels, cols, variables, numerics


def _synthetic_values(frame: Any, rng: np.random.Generator) -> tuple[dict, int]:
    """Values of every fixed-part variable on synthetic rows: all combinations of factor
    levels, each with several random values of the numeric variables."""
    import itertools

    spec = frame.spec
    keys = []
    for codes in spec.plan.terms:
        for key, _ in codes:
            if key not in keys:
                keys.append(key)
    facs = [k for k in keys if spec.fixed.vars[k].is_factor]
    nums = [k for k in keys if not spec.fixed.vars[k].is_factor]
    nsub = sum(len(spec.fixed.vars[k].suffixes) for k in nums)
    reps = nsub + 3
    ncomb = int(np.prod([len(spec.fixed.vars[k].levels) for k in facs])) if facs else 1
    values: dict[str, tuple] = {}
    if ncomb * reps <= 20000:
        combos = np.array(list(itertools.product(*[range(len(spec.fixed.vars[k].levels))
                                                   for k in facs])) or [()], dtype=np.int64)
        combos = np.repeat(combos, reps, axis=0)
        n = combos.shape[0]
        for j, k in enumerate(facs):
            values[k] = ("fac", combos[:, j])
    else:
        n = 20000
        for k in facs:
            values[k] = ("fac", rng.integers(0, len(spec.fixed.vars[k].levels), n))
    for k in nums:
        values[k] = ("num", rng.standard_normal((n, len(spec.fixed.vars[k].suffixes))) + 1.5)
    return values, n


def type3_contrasts(fit: AnyFit) -> dict[str, np.ndarray]:
    """lmerTest's type III contrasts (``get_contrasts_type3`` for treatment coding): one
    matrix (rows: hypotheses, columns: fixed effects) per term of the fixed part.

    lmerTest expresses the columns of the over-parameterised design (every factor with all
    its levels) in the columns of X by least squares on the data, then orthogonalises the
    contrasts of each term against those of the terms containing it (SAS's containment:
    more factors, the same covariates). Here the least squares runs on synthetic rows with
    every combination of factor levels, which gives the same matrices when no cell of the
    data is empty (otherwise lmerTest itself warns to interpret type III tests with care).
    """
    from multilevel.design import fill_columns

    frame = fit.frame
    X = np.asarray(frame.X, float)
    p = X.shape[1]
    labels, cols, variables, numerics = _term_structure(frame)
    if p <= 1 or len(labels) <= 1:
        Lr = _doolittle_rows(X)
        return {lab: Lr[cols[lab]] for lab in labels}
    spec = frame.spec
    rng = np.random.default_rng(20240531)
    values, n = _synthetic_values(frame, rng)
    Xs = fill_columns(spec.plan, values, n, spec.keep)
    if Xs.shape[1] != p:
        raise MultilevelError("could not rebuild the design of the fixed part for type III contrasts")
    names = list(frame.fixef_names)
    to_coding = None
    if getattr(spec.plan, "contrasts", None):
        # other contrasts than treatment (contr.poly of an ordered factor, contrasts=): as
        # lmerTest, find the contrasts for treatment coding and map them to the coding used
        # with ginv(X_treatment) X (both codings span the same columns)
        if len(spec.keep) < len(spec.plan.names):
            raise MultilevelError("type III tests of a rank-deficient fixed part with contrasts "
                                  "other than treatment are not supported; use type=1")
        plan_t = _treatment_plan(spec)
        Xt = fill_columns(plan_t, values, n)
        to_coding = _zapsmall(np.linalg.pinv(Xt) @ Xs)
        Xs, names = Xt, list(plan_t.names)
        assign_t = np.asarray(plan_t.assign)
        cols = {lab: [int(j) for j in np.flatnonzero(assign_t == k + 1)] for k, lab in enumerate(labels)}
    # the over-parameterised design: ~ 0 + term for every term, all levels of every factor
    rd_cols, rd_names = [], []
    if spec.plan.intercept:
        rd_cols.append(np.ones(n))
        rd_names.append("(Intercept)")
    import itertools
    for codes in spec.plan.terms:
        blocks = []
        for key, _ in codes:
            var = spec.fixed.vars[key]
            if var.is_factor:
                blocks.append([(key, lvl, key + var.levels[lvl]) for lvl in range(len(var.levels))])
            else:
                blocks.append([(key, k, key + suf) for k, suf in enumerate(var.suffixes)])
        for combo in itertools.product(*reversed(blocks)):
            combo = combo[::-1]
            acc = np.ones(n)
            for key, sub, _ in combo:
                kind, data = values[key]
                acc = acc * (data[:, sub] if kind == "num" else (data == sub))
            rd_cols.append(acc)
            rd_names.append(":".join(c[2] for c in combo))
    rdX = np.column_stack(rd_cols)
    L = _zapsmall((np.linalg.pinv(Xs) @ rdX).T)  # rows: rdX columns, columns: X columns
    contained = {t: [u for u in labels if variables[t] < variables[u] and numerics[t] == numerics[u]]
                 for t in labels}
    order = sorted(range(len(labels)), key=lambda i: -len(variables[labels[i]]))
    for i in order:
        t = labels[i]
        if contained[t]:
            B = L[:, [c for u in contained[t] for c in cols[u]]]
            Y = L[:, cols[t]]
            coef, *_ = np.linalg.lstsq(B, Y, rcond=None)
            L[:, cols[t]] = _zapsmall(Y - B @ coef)
    pos = {nm: i for i, nm in enumerate(rd_names)}
    if not all(nm in pos for nm in names):
        raise MultilevelError("could not match the fixed effects to the over-parameterised design")
    L = L[[pos[nm] for nm in names], :]
    out = {}
    for t in labels:
        Lt = L[:, cols[t]].T
        if to_coding is not None:
            Lt = _zapsmall(Lt @ to_coding)
        out[t] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out


def _treatment_plan(spec: Any) -> Any:
    """The column plan of the fixed part with every factor treatment coded (same terms)."""
    import copy
    import dataclasses

    from multilevel.design.contrasts import contrast_for
    from multilevel.design.matrices import make_plan

    scope = copy.copy(spec.fixed)
    scope.vars = {k: (dataclasses.replace(v, contrast=contrast_for(k, v.levels)) if v.is_factor else v)
                  for k, v in spec.fixed.vars.items()}
    return make_plan(scope)


def _satt_ftest(fit: AnyFit, L: np.ndarray, eps: float = math.sqrt(np.finfo(float).eps)):
    """lmerTest's ``contestMD``: (F, numerator df, denominator df)."""
    return satt_ftest(satterthwaite(fit), np.asarray(fit.getme("beta"), float), L, eps)


def satt_ftest(info: SatterthwaiteInfo, beta: np.ndarray, L: np.ndarray,
               eps: float = math.sqrt(np.finfo(float).eps)) -> tuple[float, int, float]:
    """The F test of L beta = 0 with Satterthwaite's denominator df (lmerTest's
    ``contestMD``) from the ingredients ``info``: (F, numerator df, denominator df)."""
    L = np.atleast_2d(np.asarray(L, float))
    if L.shape[0] == 1:
        var, df = _satt_1d(info, L[0])
        return float((L[0] @ beta) ** 2 / var), 1, df
    VL = L @ info.vcov_beta @ L.T
    d, P = np.linalg.eigh(VL)
    d, P = d[::-1], P[:, ::-1]
    tol = max(eps * d[0], 0.0)
    q = int(np.sum(d > tol))
    PtL = (P.T @ L)[:q]
    if q == 1:
        var, df = _satt_1d(info, PtL[0])
        return float((PtL[0] @ beta) ** 2 / var), 1, df
    t2 = (PtL @ beta) ** 2 / d[:q]
    F = float(t2.sum() / q)
    nu = np.array([_satt_1d(info, PtL[m])[1] for m in range(q)])
    return F, q, _fstat_ddf(nu)


def anova_terms(fit: AnyFit, ddf: str | None = "satterthwaite", type: int = 3) -> pd.DataFrame:
    """F tests of the terms of the fixed part (lmerTest's ``anova(fit)``).

    type 3 (default): lmerTest's type III hypotheses (SAS's definition); type 1: sequential.
    ddf: ``"satterthwaite"``, ``"kenward-roger"`` (F scaled as pbkrtest's ``KRmodcomp``),
    ``"residual"`` or None (chi-square/F with infinite denominator df).

    Returns a DataFrame indexed by term with ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``,
    ``F value`` and ``Pr(>F)``; Sum Sq and Mean Sq are F * sigma^2 scaled as lmerTest does.
    """
    method = _ddf_method(ddf)
    if is_glmm(fit):
        method = None  # Wald chi-square tests (F with infinite denominator df)
    elif getattr(fit, "frame", None) is None:
        lmm_problem(fit, "anova_terms")
    if type == 3:
        Ls = type3_contrasts(fit)
    elif type == 1:
        labels, cols, _, _ = _term_structure(fit.frame)
        Lr = _doolittle_rows(np.asarray(fit.frame.X, float))
        Ls = {lab: Lr[cols[lab]] for lab in labels}
    else:
        raise ModelSpecError("type must be 1 or 3")
    beta = np.asarray(fit.getme("beta"), float)
    V = np.asarray(fit.getme("vcov"), float)
    sigma2 = float(fit.getme("sigma")) ** 2
    rows = []
    for term, L in Ls.items():
        if L.shape[0] == 0:
            continue
        if method == "satterthwaite":
            F, q, den = _satt_ftest(fit, L)
            fscale = 1.0
        elif method == "kenward-roger":
            info = kenward_roger(fit)
            Lb = L @ beta
            FU = float(Lb @ np.linalg.solve(L @ info.vcov_adj @ L.T, Lb))
            den, fscale, q = _kr_adjust(info, L)
            F = FU / q
        else:
            Lb = L @ beta
            q = int(np.linalg.matrix_rank(L))
            F = float(Lb @ np.linalg.pinv(L @ V @ L.T) @ Lb) / q
            den = float(fit.nobs - beta.size) if method == "residual" else np.inf
            fscale = 1.0
        ms = F * sigma2
        Fs = F * fscale
        pval = special.fdtrc(q, den, Fs) if np.isfinite(den) else special.chdtrc(q, Fs * q)
        rows.append((term, ms * q, ms, int(q), den, Fs, float(pval)))
    out = pd.DataFrame(rows, columns=["term", "Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"])
    out = out.set_index("term")
    out.index.name = None
    out.attrs["ddf"] = method or "none"
    out.attrs["type"] = type
    return out
