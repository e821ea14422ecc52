"""``recsys export-embeddings``: the trained item embeddings of a catalogue, as Parquet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recsys.commands.predict_cmd import MODEL_HELP, TRACKING_URI_HELP


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export-embeddings", help="write every item's trained content and ID embeddings",
        description="Write one row per item of --data's item table to --out (Parquet): item_id, "
        "content (the trained content embedding the ranker reads for the item, for every item "
        "with media, including items no one has interacted with) and id_embedding (the item ID "
        "embedding, null where the run has no trained row for the item). A model without "
        "content (id_only) has no content column. The item token cache of --data is built "
        "first when missing (as for recsys evaluate).")
    parser.add_argument("--model", required=True, metavar="URI", help=MODEL_HELP)
    parser.add_argument("--data", required=True, type=Path, metavar="DIR",
                        help="dataset directory whose item table is the catalogue")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="embeddings (.parquet)")
    parser.add_argument("--tracking-uri", default=None,
                        help=TRACKING_URI_HELP)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from recsys.serving.embeddings import export_embeddings
    from recsys.serving.package import read_package
    from recsys.serving.resolve import package_of

    with package_of(args.model, args.tracking_uri, progress=not args.quiet) as package:
        summary = export_embeddings(read_package(package), args.data, args.out,
                                    progress=not args.quiet)
    print(json.dumps({"out": str(args.out), **summary}))
    return 0
