"""Command line: fit on a built-in task or a file, then score or sample a saved model."""

import argparse
import ast
import sys
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
from sklearn.model_selection import train_test_split

from . import datasets
from ._estimator import AEMDensity

BUILTIN = {
    "checkerboard": (datasets.make_checkerboard, datasets.checkerboard_log_density),
    "diamond": (datasets.make_diamond, datasets.diamond_log_density),
    "spirals": (datasets.make_spirals, None),
}


def load_array(path: str) -> np.ndarray:
    """Read a .npy file, or a numeric CSV (a header row is skipped)."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"error: no such file: {path}")
    if p.suffix == ".npy":
        X = np.load(p)
    else:
        with warnings.catch_warnings():  # an empty file: said below, once
            warnings.simplefilter("ignore", UserWarning)
            try:
                X = np.loadtxt(p, delimiter=",", ndmin=2)
            except ValueError:  # a header row
                X = np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2)
    if X.size == 0:
        raise SystemExit(f"error: {path} holds no data")
    return X


def load_model(path: str) -> AEMDensity:
    """A model saved by ``skaem fit`` (or joblib.dump of a fitted AEMDensity)."""
    if not Path(path).exists():
        raise SystemExit(f"error: no such file: {path}")
    try:
        model = joblib.load(path)
    except Exception as exc:  # joblib raises whatever unpickling a stranger file raises
        raise SystemExit(f"error: {path} is not a saved model ({type(exc).__name__})") from None
    if not isinstance(model, AEMDensity) or not hasattr(model, "model_"):
        raise SystemExit(f"error: {path} holds a {type(model).__name__}, not a fitted AEMDensity")
    return model


def parse_params(pairs: list[str]) -> dict:
    """Turn ``["max_iter=100", "proposal=uniform"]`` into estimator parameters."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params


def fit_command(args) -> None:
    true_log_density = None
    if args.data in BUILTIN:
        make, true_log_density = BUILTIN[args.data]
        X_train = make(args.n_samples, random_state=args.seed)
        X_test = make(args.n_samples // 5, random_state=args.seed + 1)
    else:
        if not Path(args.data).exists():
            raise SystemExit(
                f"error: {args.data!r} is neither a built-in task ({', '.join(BUILTIN)}) nor a file"
            )
        X = load_array(args.data)
        X_train, X_test = train_test_split(X, test_size=0.2, random_state=args.seed)
    verbose = getattr(args, "verbose", sys.stderr.isatty())
    params = {"random_state": args.seed, "verbose": int(verbose)}
    params.update(parse_params(args.param))
    model = AEMDensity(**params)
    start = time.perf_counter()
    model.fit(X_train)
    fit_time = time.perf_counter() - start
    print(f"data: {args.data}  train {X_train.shape}  test {X_test.shape}")
    print(f"fit: {model.n_iter_} steps in {fit_time:.1f} s")
    points = f"{model.eval_normalizer}, {model.n_eval_importance_samples} points"
    print(f"test log-likelihood (AEM, {points}): {model.score(X_test):.4f}")
    proposal_ll = model.set_params(density="proposal").score(X_test)
    model.set_params(density="aem")
    print(f"test log-likelihood (proposal):  {proposal_ll:.4f}")
    if true_log_density is not None:
        print(f"test log-likelihood (truth):     {true_log_density(X_test).mean():.4f}")
    joblib.dump(model, args.output)
    print(f"model saved to {args.output}")


def score_command(args) -> None:
    model = load_model(args.model)
    scores = model.score_samples(load_array(args.data))
    print(f"mean log-likelihood over {len(scores)} rows: {scores.mean():.4f}")
    if args.output:
        np.save(args.output, scores)
        print(f"scores saved to {args.output}")


def sample_command(args) -> None:
    model = load_model(args.model)
    X = model.sample(args.n_samples, random_state=args.seed)
    np.save(args.output, X)
    print(f"{len(X)} samples saved to {args.output}")
    print(summary_table(X))


def summary_table(X: np.ndarray) -> str:
    """Mean, standard deviation, minimum and maximum of each column, as a small table."""
    lines = [f"{'feature':>8} {'mean':>11} {'std':>11} {'min':>11} {'max':>11}"]
    for d, column in enumerate(X.T):
        stats = (column.mean(), column.std(), column.min(), column.max())
        lines.append(f"{d:>8} " + " ".join(f"{v:>11.4g}" for v in stats))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skaem", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="{fit,score,sample}")
    shown = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
    fit = sub.add_parser("fit", help="fit a model, print test log-likelihoods, save it", **shown)
    fit.add_argument(
        "--data",
        default="checkerboard",
        help=f"built-in task ({', '.join(BUILTIN)}) or a .csv/.npy path",
    )
    fit.add_argument(
        "--n-samples",
        type=int,
        default=10000,
        help="training rows for a built-in task (test rows: a fifth)",
    )
    fit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="AEMDensity parameter, repeatable (e.g. max_iter=1000)",
    )
    fit.add_argument(
        "--seed", type=int, default=0, help="seeds the built-in data, the split and the model"
    )
    fit.add_argument("--output", default="aem_model.joblib", help="where to save the model")
    fit.add_argument(
        "--verbose",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="show a progress bar while fitting (default: where stderr is a terminal)",
    )
    fit.set_defaults(func=fit_command)
    score = sub.add_parser("score", help="score a .csv/.npy file with a saved model", **shown)
    score.add_argument("model", help="a model saved by 'skaem fit' (.joblib)")
    score.add_argument("data", help="rows to score (.csv with a header row, or .npy)")
    score.add_argument("--output", help="where to save per-row log-densities (.npy)")
    score.set_defaults(func=score_command)
    sample = sub.add_parser("sample", help="draw samples from a saved model", **shown)
    sample.add_argument("model", help="a model saved by 'skaem fit' (.joblib)")
    sample.add_argument("n_samples", type=int, help="number of samples to draw")
    sample.add_argument("--seed", type=int, default=0, help="seeds the draw")
    sample.add_argument("--output", default="aem_samples.npy", help="where to save them (.npy)")
    sample.set_defaults(func=sample_command)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m skaem`` and the ``skaem`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # the bare command: say what it can do
        parser.print_help()
        return
    try:
        args.func(args)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
