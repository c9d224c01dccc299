"""The convenience methods of the result objects whose work is done above the results layer.

These methods are **the only calls that go up the layers**, and they do it without an import:
each one looks up the function it needs in a table (``_IMPL``) that the top of the package,
``multilevel/__init__.py``, fills with :func:`provide` after importing the layers above. It
does so the first time a method needs the table: the front registers that step with
:func:`provide_loader` (importing any part of the package runs the front first), so that
``import multilevel`` does not load inference and report (scipy). This module imports nothing
heavy at run time for the same reason. So the results layer imports only its own
layer and those below it (design, covariance, families, engine, errors), and the import graph
has no cycle. The table:

=================================  ==================================================
``LmmMethods.summary``              ``multilevel.report.summary.Summary``
``GlmmMethods.summary``             ``multilevel.report.glmm_summary.GlmmSummary``
``LmMethods.summary``               ``multilevel.report.lm_summary.LmSummary``
``MixedMethods.coef_table``         ``multilevel.inference.coef_table``
``MixedMethods.anova_terms``        ``multilevel.inference.anova_terms``
``MixedMethods.confint``            ``multilevel.inference.confint``
``MixedMethods.bootstrap``          ``multilevel.inference.bootstrap``
``MixedMethods.simulate``           ``multilevel.inference.simulate``
``MixedMethods._predict_interval``  ``multilevel.inference.predict_interval``
                                    (``predict(interval=...)``)
``GlmmMethods._refit_response``     ``multilevel.models.glmer.refit_response``
                                    (a GLMM refitted to a new response: the
                                    bootstrap's refits; inference may not import
                                    models)
``VarCorrMethods.format``           ``multilevel.report.summary.varcorr_lines``
                                    (VarCorr's printed table)
``AnovaMethods.__str__``            ``multilevel.report.anova_table.anova_text`` and
``AnovaMethods._repr_html_``        ``anova_html`` (R's ``print.anova`` of
                                    ``ml.anova(m0, m1)``'s table)
=================================  ==================================================

``LmmFit`` is ``LmmMethods + MixedMethods + MixedFit``, ``GlmmFit`` is ``GlmmMethods +
MixedMethods + MixedFit``, ``LmFit`` is ``LmMethods + FitBase`` and ``VarCorr`` is
``VarCorrMethods + Sequence``.

Example
-------
>>> import multilevel as ml
>>> from multilevel.datasets import load
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", load("sleepstudy"))
>>> isinstance(fit, MixedMethods), fit.confint(method="wald").shape
(True, (6, 2))
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: numpy and pandas are not needed to import this module
    import numpy as np
    import pandas as pd

__all__ = ["LmmMethods", "GlmmMethods", "LmMethods", "MixedMethods", "VarCorrMethods", "AnovaMethods",
           "provide", "provide_loader"]

#: name -> the function (or class) of an upper layer that a method below calls
_IMPL: dict[str, Callable[..., Any]] = {}
#: steps that fill _IMPL, run once when a method first finds its name missing
_LOADERS: list[Callable[[], None]] = []
#: the first methods may be called from several threads at once (the explorer's server fits
#: in a thread pool): one thread runs the loaders, the others wait for it
_LOADING = threading.RLock()


def provide(**impls: Callable[..., Any]) -> None:
    """Register the upper layers' functions the methods call (``multilevel/__init__.py``)."""
    _IMPL.update(impls)


def provide_loader(loader: Callable[[], None]) -> None:
    """Register a step that calls :func:`provide` (the package's front), run on first need."""
    _LOADERS.append(loader)


def _impl(name: str) -> Callable[..., Any]:
    if name not in _IMPL:
        with _LOADING:
            while name not in _IMPL and _LOADERS:
                loader = _LOADERS[0]
                loader()  # if it raises, it stays registered and the next call tries again
                _LOADERS.remove(loader)
    try:
        return _IMPL[name]
    except KeyError:  # only if multilevel/__init__.py did not run: a packaging error
        raise RuntimeError(f"multilevel's {name!r} is not registered; import multilevel first") from None


class MixedMethods:
    """Inference on a mixed model (lmer and glmer fits); see :mod:`multilevel.inference` for
    the methods and their references."""

    def coef_table(self, ddf: str | None = "satterthwaite") -> pd.DataFrame:
        """t tests of the fixed effects: columns estimate, se, df, t, p. ``ddf`` is
        "satterthwaite" (lmerTest), "kenward-roger" (pbkrtest, REML fits), "residual" (n - p)
        or None (z tests)."""
        coef_table = _impl("coef_table")

        return coef_table(self, ddf)

    def anova_terms(self, ddf: str | None = "satterthwaite", type: int = 3) -> pd.DataFrame:  # noqa: A002
        """F tests of the model terms (lmerTest's ``anova(fit)``), type III by default."""
        anova_terms = _impl("anova_terms")

        return anova_terms(self, ddf, type=type)

    def confint(self, method: str = "profile", level: float = 0.95, n: int = 500,
                seed: int | None = None, which: list[str] | None = None) -> pd.DataFrame:
        """Confidence intervals named as lme4 names them (``sd_(Intercept)|Subject``,
        ``cor_Days.(Intercept)|Subject``, ``sigma``, fixed effects). ``method``: "profile"
        (lme4's default: likelihood-ratio profiles, REML fits refitted by ML first), "wald"
        (fixed effects only, others NaN, as lme4) or "bootstrap" (``n`` parametric replicates,
        percentile intervals)."""
        confint = _impl("confint")

        return confint(self, method=method, level=level, n=n, seed=seed, which=which)

    def bootstrap(self, n: int = 1000, seed: int | None = None, func: Callable[[Any], Any] | None = None,
                  progress: bool | None = None, workers: int | None = None,
                  control: dict | None = None, re_sd: str = "varcorr") -> pd.DataFrame:
        """Parametric bootstrap (lme4's ``bootMer``) of an lmer or glmer fit: one row of
        estimates per replicate, refitting with a new response only. Deterministic for a
        ``seed``; see :func:`multilevel.inference.bootstrap`."""
        bootstrap = _impl("bootstrap")

        return bootstrap(self, n=n, seed=seed, func=func, progress=progress, workers=workers,
                         control=control, re_sd=re_sd)

    def simulate(self, n: int = 1, seed: int | None = None, re_sd: str = "varcorr") -> np.ndarray:
        """``n`` responses simulated from the fitted model (new random effects and noise),
        an (n, nobs) array; see :func:`multilevel.inference.simulate`."""
        simulate = _impl("simulate")

        return simulate(self, n=n, seed=seed, re_sd=re_sd)

    def _predict_interval(self, newdata: Any, interval: str, level: float, re_form: str | None,
                          allow_new_levels: bool) -> pd.DataFrame:
        predict_interval = _impl("predict_interval")

        return predict_interval(self, newdata, interval=interval, level=level, re_form=re_form,
                                allow_new_levels=allow_new_levels)


class LmmMethods:
    """The printed summary of an lmer fit."""

    def summary(self, correlation: bool | None = None, ddf: str | None = None) -> "multilevel.report.summary.Summary":
        """lme4's ``summary(fit)``: prints as lme4 does; ``_repr_html_`` for notebooks.

        correlation: show the correlation of the fixed effects (default: when p <= 20).
        ddf: "satterthwaite", "kenward-roger" or "residual" adds lmerTest's df and p-value
        columns to the fixed effects.

        >>> from multilevel.datasets import load
        >>> import multilevel as ml
        >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", load("sleepstudy"))
        >>> print(fit.summary(ddf="satterthwaite").coefficients.round(2))
                     Estimate  Std. Error    df  t value  Pr(>|t|)
        (Intercept)    251.41        6.82  17.0    36.84       0.0
        Days            10.47        1.55  17.0     6.77       0.0
        """
        Summary = _impl("Summary")

        return Summary(self, correlation=correlation, ddf=ddf)


class GlmmMethods:
    """The printed summary of a glmer fit."""

    def summary(self, correlation: bool | None = None) -> "multilevel.report.glmm_summary.GlmmSummary":
        """lme4's ``summary(glmerfit)``: prints as lme4 does."""
        GlmmSummary = _impl("GlmmSummary")

        return GlmmSummary(self, correlation=correlation)

    def _refit_response(self, y: np.ndarray, *, control: dict | None = None, calc_derivs: bool | None = None,
                        emit: bool = False) -> Any:
        """The same model fitted to a new response ``y`` (lme4's ``refit(fit, newresp)``),
        starting at this fit's estimates; see :func:`multilevel.models.glmer.refit_response`."""
        refit_response = _impl("refit_response")

        return refit_response(self, y, control=control, calc_derivs=calc_derivs, emit=emit)


class LmMethods:
    """The printed summary of an lm fit."""

    def summary(self) -> "multilevel.report.lm_summary.LmSummary":
        """R's ``summary(lm_fit)``: prints in R's layout; ``.coefficients`` as a DataFrame."""
        LmSummary = _impl("LmSummary")

        return LmSummary(self)


class VarCorrMethods:
    """The printed table of variance components."""

    def format(self, digits: int = 5, comp: Sequence[str] = ("Std.Dev.",)) -> str:
        """lme4's table of variance components (``formatVC``) as text."""
        varcorr_lines = _impl("varcorr_lines")

        return "\n".join(varcorr_lines(self, digits=digits, comp=comp))


class AnovaMethods:
    """The printout of a table of likelihood-ratio tests (a DataFrame subclass that mixes this
    in): R's ``print.anova`` layout in the console and in notebooks; ``to_frame()`` for the
    plain DataFrame."""

    def __str__(self) -> str:
        return _impl("anova_text")(self)

    def __repr__(self) -> str:
        return _impl("anova_text")(self)

    def _repr_html_(self) -> str:
        return _impl("anova_html")(self)

    def to_frame(self) -> pd.DataFrame:
        """The numbers as a plain :class:`pandas.DataFrame` (pandas' own printing)."""
        import pandas as pd  # (this module imports pandas for annotations only)

        out = pd.DataFrame(self, copy=True)
        out.attrs = dict(getattr(self, "attrs", {}))
        return out
