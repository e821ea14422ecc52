"""``recsys select``: compare challengers with the champion and move the ``champion`` alias."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "select", help="pick the A/B candidate among the versions of a registered model",
        description="Compare every undecided version of registered model NAME with the version "
        "holding the 'champion' alias, all at once, on the same evaluation rows "
        "(predictions/<split>.parquet of each version's run, joined on row_id), by a paired "
        "bootstrap over users: gain, (1 - alpha) interval and p-value, the p-values of several "
        "challengers adjusted together by Holm's step-down method. A challenger clears only "
        "when its gain is at least --min-gain, positive and significant after Holm (adjusted "
        "p < --alpha), and every --guardrail holds: a non-inferiority test (the challenger is "
        "shown to be worse by less than the margin, or better). Of those that clear, the "
        "largest gain is promoted (it gets 'champion', the old champion 'previous-champion'); "
        "the others that cleared meet it in a next round. Without a champion the first "
        "candidate becomes champion. Each decision says why, which guardrail held or failed, "
        "and estimates the users per arm an online A/B test needs to see the gain (an "
        "estimate). Every decision is recorded as version tags and as a run in the "
        "'recsys-selection' experiment with both models' run ids and the report as an "
        "artifact (read them back with --history). Prints a JSON report.")
    parser.add_argument("--model", required=True, metavar="NAME", help="registered model name")
    parser.add_argument("--metric", default=None,
                        help="metric path as in metrics.json: labels.<label>.{gauc,auc,logloss,"
                        "auc_cold_item,auc_cold_user} or retention.{return_7d,return_14d}.auc "
                        "(default: labels.<primary label>.gauc; logloss gains are reductions)")
    parser.add_argument("--min-gain", type=float, default=0.0,
                        help="smallest gain worth an A/B test (default 0)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of the two-sided bootstrap test, for the "
                        "family of challengers compared at once (Holm), and of each "
                        "guardrail's one-sided test (default 0.05)")
    parser.add_argument("--guardrail", action="append", default=[], metavar="METRIC[:MARGIN]",
                        help="a metric the challenger must not lose on by MARGIN or more "
                        "(non-inferiority; same paths as --metric; the direction comes from "
                        "the metric: lower is better for logloss), e.g. --guardrail "
                        "labels.like.logloss --guardrail retention.return_7d.auc:0.005; "
                        "repeat for several; a failing guardrail blocks the promotion")
    parser.add_argument("--guardrail-margin", type=float, default=None, metavar="MARGIN",
                        help="margin of the guardrails given without one, in the metric's "
                        "units (e.g. 0.002 of logloss); a guardrail needs a margin")
    parser.add_argument("--ab-power", type=float, default=0.8,
                        help="power of the estimated online A/B test size in the report "
                        "(default 0.8)")
    parser.add_argument("--n-boot", type=int, default=1000,
                        help="bootstrap resamples of the users (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--split", default="test",
                        help="evaluated split whose predictions are compared (default test)")
    parser.add_argument("--dry-run", action="store_true",
                        help="decide and print, but move no alias and record nothing")
    parser.add_argument("--history", action="store_true",
                        help="print the recorded decisions (who was champion when) and exit")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<cwd>/mlflow.db)")
    parser.set_defaults(func=run_select)


def run_select(args: argparse.Namespace) -> int:
    from recsys.runs.selection import select
    from recsys.runs.selection_record import champion_history

    if args.history:
        out = {"model": args.model, "history": champion_history(args.model, args.tracking_uri)}
    else:
        out = select(args.model, metric=args.metric, min_gain=args.min_gain, alpha=args.alpha,
                     dry_run=args.dry_run, tracking_uri=args.tracking_uri, n_boot=args.n_boot,
                     seed=args.seed, split=args.split, guardrails=args.guardrail,
                     guardrail_margin=args.guardrail_margin, ab_power=args.ab_power)
    print(json.dumps(out, indent=2))
    return 0
