"""The ``multilevel`` command line.

    multilevel fit "mAch ~ meanses + cses + (1 + cses | school)" --data hsb
    multilevel fit "Reaction ~ Days + (Days | Subject)" --data sleepstudy.csv --ml --json
    multilevel fit "mAch ~ sector + cses + (1 | school)" --data hsb --ddf satterthwaite
    multilevel anova "Reaction ~ Days + (1 | Subject)" "Reaction ~ Days + (Days | Subject)" --data sleepstudy
    multilevel compare "popular ~ 1 + (1 | class)" "popular ~ extrav + (1 | class)" --data survey.sav --format md
    multilevel report "Reaction ~ Days + (1 | Subject)" "Reaction ~ Days + (Days | Subject)" --data sleepstudy \\
        --name intercepts --name slopes
    multilevel power "Reaction ~ Days + (Days | Subject)" --data sleepstudy --test Days --fixef Days=3
    multilevel explore --data hsb
    multilevel datasets

``fit`` prints lme4's summary of the model (with ``--ddf``, lmerTest's df and p columns; with
``--json``, the fit in the field names of the lme4 reference JSON); ``anova`` prints the
likelihood-ratio tests of nested models (lme4's ``anova(m0, m1)``), ``compare`` a side-by-side
table (text, Markdown, LaTeX or HTML), ``report`` writes one self-contained HTML report.
``--data`` is a CSV, TSV, Parquet, Feather, SPSS (.sav) or Stata (.dta) file, or the name of a
bundled data set (``multilevel datasets`` lists them); see ``multilevel.datasets.read_data``.

``explore`` starts the explorer, a local web page (127.0.0.1; needs the ``explore`` extra)
that refits and redraws pooling, shrinkage, caterpillar, variance components, the summary,
pinned-model comparisons, code and power after every change; it serves until Ctrl-C.

``power`` fits the model, simulates from it (``--fixef`` sets the effect sizes to plan for)
and prints the power of the test with its interval (``--along n_groups --values 10,20,40``: a
power curve; see ``multilevel.toolkit.power``).

Every error in the input (a formula that does not parse, a column that does not exist, a file
that cannot be read, a bad option) prints one line ``error: ...`` on stderr and exits with
status 2, without a traceback. A closed pipe (``multilevel datasets | head -1``) ends the
command quietly.

The arguments are parsed before anything heavy is imported: ``--help``, ``datasets`` and
usage errors answer without loading pandas, scipy, formulaic or matplotlib.

Example
-------
>>> from multilevel.app.cli import main
>>> main(["datasets"])            # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

from multilevel.errors import MultilevelError, MultilevelWarning

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's status for bad usage; we use it for every input error
EXIT_PIPE = 1  # the reader of our output went away (Python's own status for EPIPE)
EXIT_INTERNAL = 1  # a bug: an exception that is not an input error
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

DATA_HELP = ("CSV, TSV, Parquet, Feather, SPSS (.sav) or Stata (.dta) file, or the name of a "
             "bundled data set (see `multilevel datasets`)")
DDF_CHOICES = ("satterthwaite", "kenward-roger", "residual")


class _InputError(Exception):
    """A problem with the command-line input that is not a MultilevelError (e.g. a bad option)."""


class _Parser(argparse.ArgumentParser):
    """argparse with the command's error format: one line ``error: ...``, status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _model_options(with_ddf: bool) -> argparse.ArgumentParser:
    """The options that say how each model is fitted (shared by fit, anova and compare)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data", required=True, metavar="PATH_OR_NAME", help=DATA_HELP)
    p.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    p.add_argument("--weights", metavar="COL", help="column of prior (precision) weights")
    p.add_argument("--family", metavar="NAME",
                   help="fit a generalised model (glmer): binomial, poisson, Gamma, inverse.gaussian "
                        "or negative.binomial (theta estimated as glmer.nb unless --nb-theta)")
    p.add_argument("--nb-theta", type=float, default=None, metavar="THETA",
                   help="negative.binomial: a fixed theta instead of glmer.nb's estimate")
    p.add_argument("--link", metavar="NAME", help="link function (default: the family's canonical link)")
    p.add_argument("--nagq", type=int, default=1, metavar="N",
                   help="glmer: 1 = Laplace (default), > 1 adaptive Gauss-Hermite points, 0 = fast nAGQ=0 fit")
    p.add_argument("--contrasts", action="append", metavar="F=TYPE[,G=TYPE]",
                   help="contrasts of fixed-part factors, as lme4's contrasts=: e.g. "
                        "sector=sum,vr=helmert (treatment, sum, helmert, poly, SAS; R's "
                        "contr.sum spelling too); may be repeated")
    if with_ddf:
        p.add_argument("--ddf", choices=DDF_CHOICES, metavar="METHOD",
                       help="denominator df of the fixed effects' t tests, with p values: "
                            "satterthwaite (lmerTest), kenward-roger (pbkrtest; REML fits) or "
                            "residual (n - p)")
    return p


def _several_models(p: argparse.ArgumentParser, formulas_help: str,
                    formats: Sequence[str] = ()) -> None:
    """The arguments of the commands that fit several models: the formulas, a name for each
    and (if ``formats``) the output format, the first being the default."""
    p.add_argument("formulas", nargs="+", metavar="FORMULA", help=formulas_help)
    p.add_argument("--name", action="append", dest="names", metavar="NAME",
                   help="a name for each model, in the order of the formulas (repeat it: "
                        "--name null --name slopes)")
    if formats:
        p.add_argument("--format", choices=formats, default=formats[0],
                       help=f"output: {', '.join(formats)} (default {formats[0]})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per task)."""
    p = _Parser(prog="multilevel",
                description="Multilevel (mixed-effects) models with lme4's formulas and numbers.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)

    f = sub.add_parser("fit", parents=[_model_options(with_ddf=True)],
                       help="fit a model and print its summary",
                       description="Fit a linear mixed model (lme4's lmer), or with --family a "
                                   "generalised one (glmer), and print lme4's summary.")
    f.add_argument("formula", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    f.add_argument("--batch-size", type=int, default=None, metavar="ROWS",
                   help="read Parquet/CSV data in batches of ROWS rows (out of core); files "
                        f"above {CHUNKED_FILE_BYTES // 2**20} MB and directories are read so "
                        "by default")
    f.add_argument("--json", action="store_true",
                   help="print the fit as JSON in the field names of lme4's reference fits")
    f.set_defaults(handler=_cmd_fit)

    tables = [  # name, help, description, --ddf?, formulas' help, formats, handler
        ("anova", "likelihood-ratio tests of nested models (lme4's anova(m0, m1, ...))",
         "Fit each formula to the data and print lme4's anova table: likelihood-ratio tests of "
         "the nested models (REML fits are refitted by ML first, as lme4).",
         False, "two or more nested lme4 formulas", ("text", "html"), _cmd_anova),
        ("compare", "a side-by-side table of models",
         "Fit each formula to the data and print the models side by side: estimates, standard "
         "errors, variance components, fit statistics.",
         True, "lme4 formula(s)", ("text", "md", "latex", "html"), _cmd_compare),
    ]
    for name, help_, description, with_ddf, formulas_help, formats, handler in tables:
        t = sub.add_parser(name, parents=[_model_options(with_ddf)], help=help_,
                           description=description)
        _several_models(t, formulas_help, formats)
        t.set_defaults(handler=handler)

    r = sub.add_parser("report", help="fit models and write a self-contained HTML report",
                       description="Fit one or more models to one data set and write one HTML file "
                                   "(data structure, pooling, summaries, plots, model comparison). "
                                   "The file embeds its images and needs no network.")
    _several_models(r, "lme4 formula(s); several are compared (side-by-side table, "
                       "likelihood-ratio tests)")
    r.add_argument("--data", required=True, metavar="PATH_OR_NAME", help=DATA_HELP)
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

    ex = sub.add_parser("explore", help="open the explorer: pooling, shrinkage and models live, in the browser",
                        description="Start a local web app (on 127.0.0.1; no network) and open it in "
                                    "the browser: bundled, file or simulated data (sliders set the "
                                    "generating model), a model from lists or an lme4 formula, and "
                                    "every view refitted after each change. Needs the explore extra: "
                                    'pip install "multilevel[explore]".')
    ex.add_argument("--data", metavar="PATH_OR_NAME",
                    help=DATA_HELP + "; default: a simulated data set")
    ex.add_argument("--formula", help="the model to start with (default: a suggestion for the data)")
    ex.add_argument("--port", type=int, default=None, metavar="N",
                    help="port to serve on (default 8765, or a free one when it is taken; 0: any free port)")
    ex.add_argument("--host", default="127.0.0.1",
                    help="address to serve on (default 127.0.0.1: this computer only)")
    ex.add_argument("--no-browser", action="store_true", help="do not open the browser")
    ex.set_defaults(handler=_cmd_explore)

    d = sub.add_parser("datasets", help="list the bundled data sets",
                       description="List the data sets bundled with multilevel.")
    d.set_defaults(handler=_cmd_datasets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for an input error; 1 for a
    bug, reported in one line unless the environment sets MULTILEVEL_TRACEBACK).

    Usage errors (an unknown option, a missing ``--data``) exit through ``SystemExit(2)``
    as argparse does, after the same one-line message."""
    args = build_parser().parse_args(argv)
    try:
        status = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
        return status
    except (MultilevelError, _InputError) as e:
        # one line: the message's first line (FormulaError adds the formula and a caret below)
        lines = str(e).strip().splitlines()
        print(f"error: {lines[0] if lines else type(e).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # `multilevel datasets | head -1`: the reader has gone. Point stdout at devnull so that
        # Python's final flush does not fail again, and stop without a traceback (the recipe
        # of the signal module's documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 -- a bug of ours, not the user's input
        if os.environ.get("MULTILEVEL_TRACEBACK"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"error: internal error ({type(e).__name__}: {first}); please report it "
              f"(MULTILEVEL_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


# --- data and models ----------------------------------------------------------------------


#: Parquet / CSV files larger than this are fitted out of core (read in batches)
CHUNKED_FILE_BYTES = 512 * 2**20


def _chunked_path(spec: str, batch_size: int | None) -> bool:
    """Whether ``multilevel fit`` reads the data in batches: a directory of Parquet/CSV files,
    a Parquet/CSV file above :data:`CHUNKED_FILE_BYTES`, or any such file with --batch-size."""
    low = spec.lower()
    tabular = low.endswith((".parquet", ".pq", ".csv", ".csv.gz", ".tsv"))
    if os.path.isdir(spec):
        # a directory of Parquet/CSV files (an empty one, or a bundled name, is not data)
        from pathlib import Path

        return any(str(f).lower().endswith((".parquet", ".pq", ".csv", ".csv.gz", ".tsv"))
                   for f in Path(spec).rglob("*") if f.is_file())
    if not (tabular and os.path.isfile(spec)):
        if batch_size is not None:
            raise _InputError(f"--batch-size reads Parquet or CSV files (or a directory of "
                              f"them), not {spec!r}")
        return False
    return batch_size is not None or os.path.getsize(spec) > CHUNKED_FILE_BYTES


def _read_data(spec: str) -> tuple[pd.DataFrame, str]:
    """A data frame from a file path or a bundled data set name, and the name to show."""
    from multilevel.datasets import FORMATS, load, read_data

    # a bundled name is never a path; a directory named like one is not data
    looks_like_file = os.path.isfile(spec) or os.sep in spec or any(
        spec.lower().endswith(ext) for ext in FORMATS)
    if looks_like_file:
        return read_data(spec), os.path.basename(spec)
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


def _is_glmm(args: argparse.Namespace) -> bool:
    family = getattr(args, "family", None)
    return bool(family) and family != "gaussian"


def _check_options(args: argparse.Namespace) -> None:
    """Options that contradict each other, refused before the data are read."""
    if _is_glmm(args):
        if args.ml:
            raise _InputError("--ml is for linear mixed models; glmer fits are always ML")
        if getattr(args, "ddf", None) and args.command == "fit":
            raise _InputError("--ddf is for linear mixed models; glmer's summary has z tests")
    elif getattr(args, "link", None) or getattr(args, "nagq", 1) != 1:
        raise _InputError("--link and --nagq need --family (binomial or poisson)")
    if getattr(args, "ddf", None) and getattr(args, "json", False):
        raise _InputError("--ddf changes the printed summary; it cannot be combined with --json")
    names = getattr(args, "names", None)
    if names is not None:
        if len(names) != len(args.formulas):
            raise _InputError(f"--name given {len(names)} times for {len(args.formulas)} "
                              f"formula(s): give one name per formula")
        if len(set(names)) != len(names):
            raise _InputError("--name: the model names must be different")


def _fit(args: argparse.Namespace, formula: str, df: pd.DataFrame) -> Any:
    """Fit one model as the arguments describe (the one place that chooses lmer vs glmer)."""
    import multilevel  # lazily: the engine is only loaded when a model is fitted

    kw: dict[str, Any] = {}
    if getattr(args, "weights", None):
        kw["weights"] = args.weights
    contrasts = _parse_contrasts(getattr(args, "contrasts", None))
    if contrasts:
        kw["contrasts"] = contrasts
    with warnings.catch_warnings():
        # the summary (and the JSON's convergence.warnings) already carry the fit's warnings
        warnings.simplefilter("ignore", MultilevelWarning)
        if getattr(args, "_batch_size", None) is not None:
            kw["batch_size"] = args._batch_size
        if _is_glmm(args):
            if getattr(args, "nb_theta", None) is not None:
                kw["nb_theta"] = args.nb_theta
            fit = multilevel.glmer(formula, data=df, family=args.family, link=args.link,
                                   nagq=args.nagq, **kw)
        else:
            fit = multilevel.lmer(formula, data=df, reml=not args.ml, **kw)
    return fit


def _check_formulas(formulas: Sequence[str]) -> None:
    """Parse each formula before the data are read: a typo is reported at once (the parser
    is plain Python; reading the data and fitting load pandas, scipy and formulaic)."""
    from multilevel.formula import parse_formula

    for formula in formulas:
        parse_formula(formula)


def _fit_all(args: argparse.Namespace) -> list[Any]:
    """Each formula of ``args.formulas`` fitted to the one data set."""
    _check_formulas(args.formulas)
    df, name = _read_data(args.data)
    fits = [_fit(args, formula, df) for formula in args.formulas]
    for fit in fits:
        _label(fit, name, args)
    return fits


def _label(fit: Any, data_name: str, args: argparse.Namespace) -> None:
    """The names the summary prints (``Data: hsb``, ``Weights: w``)."""
    if hasattr(fit, "data_name"):
        fit.data_name = data_name
    if hasattr(fit, "weights_name") and getattr(args, "weights", None):
        fit.weights_name = args.weights


# --- the commands -------------------------------------------------------------------------


def _cmd_fit(args: argparse.Namespace) -> int:
    _check_options(args)
    _check_formulas([args.formula])
    if _chunked_path(args.data, args.batch_size):
        # big data: the path itself, read in batches (lmer: peak memory one batch + the
        # blocks; glmer: partitions of whole groups, see models.glmer_chunked), never a
        # whole data frame
        df, name = args.data, os.path.basename(os.path.normpath(args.data))
        args._batch_size = args.batch_size
    else:
        df, name = _read_data(args.data)
    fit = _fit(args, args.formula, df)
    _label(fit, name, args)
    if args.json:
        import json

        print(json.dumps(fit.to_dict(), indent=2))
    elif args.ddf:
        print(fit.summary(ddf=args.ddf))
    else:
        print(fit.summary())
    return EXIT_OK


def _cmd_anova(args: argparse.Namespace) -> int:
    _check_options(args)
    if len(args.formulas) < 2:
        raise _InputError("anova compares two or more models: give two or more formulas")
    fits = _fit_all(args)
    import multilevel

    table = multilevel.anova(*fits, names=args.names)  # prints in R's print.anova layout
    print(table._repr_html_() if args.format == "html" else table)
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    _check_options(args)
    fits = _fit_all(args)
    import multilevel

    table = multilevel.compare(*fits, names=args.names, ddf=args.ddf)
    if args.format == "text":
        print(table)
    else:
        print(getattr(table, {"md": "to_markdown", "latex": "to_latex", "html": "to_html"}[args.format])())
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    _check_options(args)
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):  # fail before the fitting, not after it
        raise _InputError(f"cannot write {args.output!r}: directory {out_dir!r} does not exist")
    _check_formulas(args.formulas)
    from multilevel.app.html_report import build_report

    kw: dict[str, Any] = {}
    if args.names:
        if not _takes_keyword(build_report, "names"):
            raise _InputError("--name: this version's HTML report cannot name its models")
        kw["names"] = args.names
    df, name = _read_data(args.data)
    html = build_report(args.formulas, df, data_name=name, reml=not args.ml, family=args.family,
                        title=args.title, **kw)  # progress on stderr when it is a terminal
    try:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(html)
    except OSError as e:
        raise _InputError(f"cannot write {args.output!r}: {e.strerror or e}") from e
    print(f"wrote {args.output} ({len(html.encode('utf-8')) / 1e6:.1f} MB)")
    return EXIT_OK


# --- power --------------------------------------------------------------------------------


def _cmd_power(args: argparse.Namespace) -> int:
    import json

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


def _takes_keyword(fn: Any, name: str) -> bool:
    import inspect

    params = inspect.signature(fn).parameters.values()
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


# --- explore ------------------------------------------------------------------------------


def _cmd_explore(args: argparse.Namespace) -> int:
    if args.port is not None and not 0 <= args.port <= 65535:
        raise _InputError(f"--port: a port number from 0 to 65535, got {args.port}")
    if args.formula:
        _check_formulas([args.formula])
    # lazily: the server (Starlette, uvicorn) is loaded only by this command
    from multilevel.app.explore import explore, require_server

    require_server()
    try:
        explore(args.data, formula=args.formula, host=args.host, port=args.port,
                open_browser=not args.no_browser, block=True)
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: not an error
        pass
    print("multilevel explore: stopped", file=sys.stderr)
    return EXIT_OK


# --- datasets -----------------------------------------------------------------------------


def _cmd_datasets(args: argparse.Namespace) -> int:
    from multilevel.datasets import list_datasets

    rows = list_datasets(as_frame=False)  # no pandas: the listing answers at once
    source = [f"{r['package']}::{r['r_name']}" for r in rows]
    wn = max(len("name"), *(len(r["name"]) for r in rows))
    ws = max(len(s) for s in source)
    print(f"{'name':<{wn}}  {'rows':>6}  {'cols':>4}  {'R source':<{ws}}  description")
    for r, src in zip(rows, source):
        print(f"{r['name']:<{wn}}  {r['rows']:>6}  {r['columns']:>4}  {src:<{ws}}  {r['description']}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
