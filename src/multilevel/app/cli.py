"""The ``multilevel`` command line.

    multilevel fit "mAch ~ meanses + cses + (1 + cses | school)" --data hsb
    multilevel fit "Reaction ~ Days + (Days | Subject)" --data sleepstudy.csv --ml --json
    multilevel fit "mAch ~ sector + cses + (1 | school)" --data hsb --contrasts sector=sum
    multilevel report "Reaction ~ Days + (1 | Subject)" "Reaction ~ Days + (Days | Subject)" --data sleepstudy
    multilevel power "Reaction ~ Days + (Days | Subject)" --data sleepstudy --test Days --fixef Days=3
    multilevel datasets

``fit`` prints lme4's summary of the model (or, with ``--json``, the fit in the field names
of the lme4 reference JSON); ``--data`` is a CSV/TSV/Parquet file or the name of a bundled
data set (``multilevel datasets`` lists them). Errors in the input (a formula that does not
parse, a column that does not exist, a file that cannot be read) print one line
``error: ...`` on stderr and exit with status 2, without a traceback.

``power`` fits the model, simulates from it (``--fixef`` sets the effect sizes to plan for)
and prints the power of the test with its interval (``--along n_groups --values 10,20,40``: a
power curve; see ``multilevel.toolkit.power``).

``report`` fits each formula and writes one self-contained HTML report (``-o``, default
``report.html``; see ``multilevel.app.html_report``).

Example
-------
>>> from multilevel.app.cli import main
>>> main(["datasets"])            # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any, Sequence

import pandas as pd

from multilevel.errors import MultilevelError, MultilevelWarning

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's status for bad usage; we use it for every input error


class _InputError(Exception):
    """A problem with the command-line input that is not a MultilevelError (e.g. a bad file)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per task)."""
    p = argparse.ArgumentParser(
        prog="multilevel",
        description="Multilevel (mixed-effects) models with lme4's formulas and numbers.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    f = sub.add_parser("fit", help="fit a model and print its summary",
                       description="Fit a linear mixed model (lme4's lmer), or with --family a "
                                   "generalised one (glmer), and print lme4's summary.")
    f.add_argument("formula", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    f.add_argument("--data", required=True, metavar="PATH_OR_NAME",
                   help="CSV/TSV/Parquet file, or the name of a bundled data set (see `multilevel datasets`)")
    f.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    f.add_argument("--weights", metavar="COL", help="column of prior (precision) weights")
    f.add_argument("--json", action="store_true",
                   help="print the fit as JSON in the field names of lme4's reference fits")
    f.add_argument("--family", metavar="NAME",
                   help="fit a generalised model (glmer): binomial, poisson, Gamma, inverse.gaussian "
                        "or negative.binomial (theta estimated as glmer.nb unless --nb-theta)")
    f.add_argument("--nb-theta", type=float, default=None, metavar="THETA",
                   help="negative.binomial: a fixed theta instead of glmer.nb's estimate")
    f.add_argument("--link", metavar="NAME", help="link function (default: the family's canonical link)")
    f.add_argument("--nagq", type=int, default=1, metavar="N",
                   help="glmer: 1 = Laplace (default), > 1 adaptive Gauss-Hermite points, 0 = fast nAGQ=0 fit")
    f.add_argument("--contrasts", action="append", metavar="F=TYPE[,G=TYPE]",
                   help="contrasts of fixed-part factors, as lme4's contrasts=: e.g. "
                        "sector=sum,vr=helmert (treatment, sum, helmert, poly, SAS; R's "
                        "contr.sum spelling too); may be repeated")
    f.set_defaults(handler=_cmd_fit)

    r = sub.add_parser("report", help="fit models and write a self-contained HTML report",
                       description="Fit one or more models to one data set and write one HTML file "
                                   "(data structure, pooling, summaries, plots, model comparison). "
                                   "The file embeds its images and needs no network.")
    r.add_argument("formulas", nargs="+", metavar="FORMULA",
                   help="lme4 formula(s); several are compared (side-by-side table, likelihood-ratio tests)")
    r.add_argument("--data", required=True, metavar="PATH_OR_NAME",
                   help="CSV/TSV/Parquet file, or the name of a bundled data set (see `multilevel datasets`)")
    r.add_argument("-o", "--output", default="report.html", metavar="FILE",
                   help="where to write the report (default: report.html)")
    r.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    r.add_argument("--family", metavar="NAME", help="GLMM family (binomial, poisson): fit with glmer")
    r.add_argument("--title", help="title of the report")
    r.set_defaults(handler=_cmd_report)

    pw = sub.add_parser("power", help="power of a test by simulation (as simr's powerSim / powerCurve)",
                        description="Fit the model, then simulate from it (with --fixef the effect "
                                    "sizes to plan for), refit and test NSIM times; prints the power "
                                    "with its Clopper-Pearson interval, per design with --along.")
    pw.add_argument("formula", help='lme4 formula of the true model, e.g. "Reaction ~ Days + (Days | Subject)"')
    pw.add_argument("--data", required=True, metavar="PATH_OR_NAME",
                    help="CSV/TSV/Parquet file, or the name of a bundled data set")
    what = pw.add_mutually_exclusive_group(required=True)
    what.add_argument("--test", metavar="TERM", help="the fixed effect (or term) to test, e.g. Days")
    what.add_argument("--null", metavar="FORMULA", help="a null-model formula: likelihood-ratio test against FORMULA")
    pw.add_argument("--method", default=None, choices=["satterthwaite", "lrt", "z"],
                    help="the test (default: satterthwaite for --test, lrt for --null)")
    pw.add_argument("--nsim", type=int, default=1000, metavar="N", help="simulations per design (default 1000)")
    pw.add_argument("--along", choices=["n_groups", "group_size"], help="vary the design: number of groups or rows per group")
    pw.add_argument("--values", metavar="V1,V2,...", help="the sizes to try along --along, e.g. 10,20,40")
    pw.add_argument("--group", metavar="NAME", help="the grouping factor to extend (when there are several)")
    pw.add_argument("--fixef", action="append", metavar="NAME=VALUE[,...]",
                    help="true fixed effects to simulate with instead of the estimates, e.g. Days=5")
    pw.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    pw.add_argument("--seed", type=int, default=None, help="random seed (the same seed gives the same result)")
    pw.add_argument("--ml", action="store_true", help="fit the model by maximum likelihood instead of REML")
    pw.add_argument("--json", action="store_true", help="print the result as JSON")
    pw.add_argument("--plot", metavar="FILE", help="also save the power curve as an image (PNG, SVG, PDF)")
    pw.set_defaults(handler=_cmd_power)

    d = sub.add_parser("datasets", help="list the bundled data sets",
                       description="List the data sets bundled with multilevel.")
    d.set_defaults(handler=_cmd_datasets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for an input error)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (MultilevelError, _InputError) as e:
        # one line: the message's first line (FormulaError adds the formula and a caret below)
        lines = str(e).strip().splitlines()
        print(f"error: {lines[0] if lines else type(e).__name__}", file=sys.stderr)
        return EXIT_USAGE


# --- fit ----------------------------------------------------------------------------------


def _read_data(spec: str) -> tuple[pd.DataFrame, str]:
    """A data frame from a file path or a bundled data set name, and the name to show."""
    if os.path.exists(spec):
        lower = spec.lower()
        try:
            if lower.endswith((".parquet", ".pq")):
                df = pd.read_parquet(spec)
            elif lower.endswith((".tsv", ".tsv.gz", ".tab")):
                df = pd.read_csv(spec, sep="\t")
            else:
                df = pd.read_csv(spec)
        except (OSError, ValueError, ImportError) as e:
            raise _InputError(f"cannot read {spec!r}: {e}") from e
        return df, os.path.basename(spec)
    from multilevel.datasets import load

    try:
        return load(spec), spec
    except MultilevelError as e:
        raise _InputError(f"{spec!r} is neither a file nor a bundled data set "
                          "(`multilevel datasets` lists them)") from e


def _parse_contrasts(values: Sequence[str] | None) -> dict[str, str] | None:
    """``--contrasts sector=sum,vr=helmert`` (possibly repeated) as ``{"sector": "sum", ...}``.

    >>> _parse_contrasts(["sector=sum,vr=contr.helmert", "f = poly"])
    {'sector': 'sum', 'vr': 'contr.helmert', 'f': 'poly'}
    """
    if not values:
        return None
    out: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            name, eq, kind = item.partition("=")
            if not eq or not name.strip() or not kind.strip():
                raise _InputError(f"--contrasts: expected FACTOR=TYPE (e.g. sector=sum), got "
                                  f"{item.strip()!r}")
            out[name.strip()] = kind.strip()
    return out


def _fit(args: argparse.Namespace, df: pd.DataFrame) -> Any:
    """Fit the model the arguments describe (the one place that chooses lmer vs glmer)."""
    import multilevel  # lazily: the engine is only loaded for `fit`

    kw: dict[str, Any] = {}
    if args.weights:
        kw["weights"] = args.weights
    contrasts = _parse_contrasts(getattr(args, "contrasts", None))
    if contrasts:
        kw["contrasts"] = contrasts
    family = getattr(args, "family", None)
    if family and family != "gaussian":
        if args.ml:
            raise _InputError("--ml is for linear mixed models; glmer fits are always ML")
        if getattr(args, "nb_theta", None) is not None:
            kw["nb_theta"] = args.nb_theta
        return multilevel.glmer(args.formula, data=df, family=family, link=args.link,
                                nagq=args.nagq, **kw)
    if getattr(args, "link", None) or getattr(args, "nagq", 1) != 1:
        raise _InputError("--link and --nagq need --family (binomial or poisson)")
    return multilevel.lmer(args.formula, data=df, reml=not args.ml, **kw)


def _cmd_fit(args: argparse.Namespace) -> int:
    df, name = _read_data(args.data)
    with warnings.catch_warnings():
        # the summary (and the JSON's convergence.warnings) already carry the fit's warnings
        warnings.simplefilter("ignore", MultilevelWarning)
        fit = _fit(args, df)
    if hasattr(fit, "data_name"):
        fit.data_name = name
    if hasattr(fit, "weights_name") and args.weights:
        fit.weights_name = args.weights
    if args.json:
        print(json.dumps(fit.to_dict(), indent=2))
    else:
        print(fit.summary())
    return EXIT_OK


# --- report -------------------------------------------------------------------------------


def _cmd_report(args: argparse.Namespace) -> int:
    from multilevel.app.html_report import build_report

    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):  # fail before the fitting, not after it
        raise _InputError(f"cannot write {args.output!r}: directory {out_dir!r} does not exist")
    df, name = _read_data(args.data)
    html = build_report(args.formulas, df, data_name=name, reml=not args.ml, family=args.family,
                        title=args.title)  # progress on stderr when it is a terminal
    try:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(html)
    except OSError as e:
        raise _InputError(f"cannot write {args.output!r}: {e.strerror or e}") from e
    print(f"wrote {args.output} ({len(html.encode('utf-8')) / 1e6:.1f} MB)")
    return EXIT_OK


# --- power --------------------------------------------------------------------------------


def _cmd_power(args: argparse.Namespace) -> int:
    from multilevel.toolkit.power import power  # lazily: `multilevel --help` stays fast

    values = None
    if args.values is not None:
        try:
            values = [int(v) for v in args.values.split(",") if v.strip()]
        except ValueError:
            raise _InputError(f"--values: expected whole numbers separated by commas, got "
                              f"{args.values!r}") from None
    fixef: dict[str, float] = {}
    for item in ",".join(args.fixef or []).split(","):
        if not item.strip():
            continue
        name, eq, val = item.partition("=")
        try:
            fixef[name.strip()] = float(val)
        except ValueError:
            raise _InputError(f"--fixef: expected NAME=VALUE (e.g. Days=5), got {item.strip()!r}") from None
        if not eq or not name.strip():
            raise _InputError(f"--fixef: expected NAME=VALUE (e.g. Days=5), got {item.strip()!r}")
    df, _name = _read_data(args.data)
    import multilevel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MultilevelWarning)  # the truth's warnings do not matter here
        fit = multilevel.lmer(args.formula, data=df, reml=not args.ml)
    res = power(fit, args.test if args.test is not None else args.null, nsim=args.nsim,
                along=args.along, values=values, alpha=args.alpha, seed=args.seed,
                method=args.method, fixef=fixef or None, data=df, group=args.group)
    print(json.dumps(res.to_dict(), indent=2) if args.json else res)
    if args.plot:
        from multilevel.report.power_plot import plot_power_curve

        try:
            plot_power_curve(res).savefig(args.plot, dpi=120, bbox_inches="tight")
        except (OSError, ValueError) as e:
            raise _InputError(f"cannot write {args.plot!r}: {e}") from e
    return EXIT_OK


# --- datasets -----------------------------------------------------------------------------


def _cmd_datasets(args: argparse.Namespace) -> int:
    from multilevel.datasets import list_datasets

    tab = list_datasets()
    source = (tab["package"] + "::" + tab["r_name"]).tolist()
    wn = max(len("name"), int(tab["name"].str.len().max()))
    ws = max(len(s) for s in source)
    print(f"{'name':<{wn}}  {'rows':>6}  {'cols':>4}  {'R source':<{ws}}  description")
    for r, src in zip(tab.itertuples(index=False), source):
        print(f"{r.name:<{wn}}  {r.rows:>6}  {r.columns:>4}  {src:<{ws}}  {r.description}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
