"""Query studies' result tables from the command line.

Usage:
    python -m results.query sql "SELECT model, max(test_accuracy) FROM trials GROUP BY 1" studies/a
    python -m results.query leaderboard studies/a studies/b [--metric test_auc] [--top 10] [--ci]
    python -m results.query leaderboard studies/a --by worst-eval [--eval-metric auc]
    python -m results.query compare --rows model --cols batch_size --metric test_accuracy \\
        --agg max studies/a
    python -m results.query curves <trial_id> studies/a [--png curves.png]
    python -m results.query paper bartos_batch studies/a
    python -m results.query mcnemar <trial_a> <trial_b> studies/a
    python -m results.query bootstrap <trial> studies/a [--n-boot 2000] [--seed 0]
    python -m results.query importance studies/a [--metric best_val_accuracy] [--evaluator ped]
    ... --format table|csv|markdown|json   (default: a terminal table)

Study arguments are study directories, or folders holding several; they are merged without
duplicate rows (see ``results.load``). Trials are named ``trial_id`` or ``study/trial_id``.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from results import aggregate
from results.aggregate import AGGREGATES, Report, ReportError
from results.importance import EVALUATORS, importances
from results.render import FORMATS, render
from results.tables import MergeError, SchemaError, load
from trainables.registry import UnknownNameError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m results.query", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split(
        "\n", 2)[2])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--format", choices=FORMATS, default="table")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("sql", parents=[common], help="SQL (DuckDB) over the tables")
    s.add_argument("query")
    s.add_argument("studies", nargs="+")

    s = sub.add_parser("leaderboard", parents=[common], help="trials ranked, stops marked")
    s.add_argument("studies", nargs="+")
    s.add_argument("--metric", default="test_accuracy")
    s.add_argument("--top", type=int)
    s.add_argument("--ci", action="store_true", help="bootstrap interval of test accuracy")
    s.add_argument("--n-boot", type=int, default=1000)
    s.add_argument("--by", choices=aggregate.BY, default="metric",
                   help="rank by --metric, or by the worst (or mean) over the evaluation sets")
    s.add_argument("--eval-metric", default="auc",
                   help="the evaluation sets' metric --by worst-eval/mean-eval uses")

    s = sub.add_parser("compare", parents=[common], help="pivot a metric over two columns")
    s.add_argument("studies", nargs="+")
    s.add_argument("--rows", required=True)
    s.add_argument("--cols")
    s.add_argument("--metric", default="test_accuracy")
    s.add_argument("--agg", choices=AGGREGATES, default="max")
    s.add_argument("--no-tests", action="store_true", help="skip the McNemar tests")

    s = sub.add_parser("curves", parents=[common], help="per-epoch history of one trial")
    s.add_argument("trial")
    s.add_argument("studies", nargs="+")
    s.add_argument("--png", help="also write the learning curves to this PNG")

    s = sub.add_parser("paper", parents=[common], help="a seed paper's table beside ours")
    s.add_argument("space")
    s.add_argument("studies", nargs="+")
    s.add_argument("--agg", choices=AGGREGATES, default="max")

    s = sub.add_parser("mcnemar", parents=[common], help="McNemar's test of two trials")
    s.add_argument("trial_a")
    s.add_argument("trial_b")
    s.add_argument("studies", nargs="+")

    s = sub.add_parser("bootstrap", parents=[common], help="bootstrap CIs of accuracy and AUC")
    s.add_argument("trial")
    s.add_argument("studies", nargs="+")
    s.add_argument("--n-boot", type=int, default=2000)
    s.add_argument("--level", type=float, default=0.95)
    s.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("importance", parents=[common],
                       help="hyperparameter importance (Optuna's evaluators)")
    s.add_argument("studies", nargs="+")
    s.add_argument("--metric", default="best_val_accuracy")
    s.add_argument("--evaluator", choices=EVALUATORS, default="fanova")
    s.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> Report:
    if args.command == "sql":
        import duckdb

        from results.sql import ReadOnlyError, connect, query

        try:
            df = query(connect(args.studies), args.query)
        except ReadOnlyError as exc:
            raise ReportError(str(exc)) from None
        except duckdb.Error as exc:
            raise ReportError(f"SQL error: {exc}") from None
        return Report(args.query, {"result": df})
    needs_predictions = args.command in ("mcnemar", "bootstrap") or (
        args.command == "leaderboard" and args.ci) or (
        args.command == "compare" and not args.no_tests)
    names = None if needs_predictions else ["trials", "epochs", "studies"]
    tables = load(args.studies, tables=names)
    if args.command == "leaderboard":
        return aggregate.leaderboard(tables, args.metric, args.top, args.ci, args.n_boot,
                                     by=args.by, eval_metric=args.eval_metric)
    if args.command == "compare":
        return aggregate.compare(tables, args.rows, args.cols, args.metric, args.agg,
                               tests=not args.no_tests)
    if args.command == "curves":
        report = aggregate.curves(tables, args.trial)
        if args.png:
            from results.figures import learning_curves, save

            trial = aggregate.find_trial(tables["trials"], args.trial)
            save(learning_curves(tables["epochs"], tables["trials"],
                                 [f"{trial['study']}/{trial['trial_id']}"]), args.png)
            report.notes.append(f"figure: {args.png}")
        return report
    if args.command == "paper":
        return aggregate.paper(tables, args.space, args.agg)
    if args.command == "importance":
        df = importances(tables, args.metric, args.evaluator, args.seed)
        return Report(f"importance of each hyperparameter for {args.metric} "
                      f"({args.evaluator})", {"importance": df})
    if args.command == "mcnemar":
        return aggregate.mcnemar_report(tables, args.trial_a, args.trial_b)
    return aggregate.bootstrap_report(tables, args.trial, args.n_boot, args.level, args.seed)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = run(args)
    except (ReportError, SchemaError, MergeError, FileNotFoundError, UnknownNameError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 60,
                           "display.max_colwidth", 60):
        print(render(report, args.format))
    if args.format == "csv" and report.notes:
        print("\n".join(report.notes), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
