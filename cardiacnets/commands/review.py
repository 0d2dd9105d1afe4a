"""``cardiacnets review``: serve the review and reader-study web app."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

TOKEN_ENV = "CARDIACNETS_REVIEW_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "review", help="web app: browse cases, ECG + real/generated cines + predictions, uploads, reader studies",
        description="Serve the review app (FastAPI, server-rendered pages, no internet needed). The model folder "
                    "may hold generator/ (ECGToCMRPipeline, short axis), generator_la_4ch/ and heads/; each is "
                    "optional. Binds 127.0.0.1 unless --host says otherwise; any other address, or a served "
                    f"study, needs a token (--token or ${TOKEN_ENV}).")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET", help="training set folder (cardiacnets preprocess)")
    p.add_argument("--model", type=Path, metavar="DIR", help="run folder with generator/, generator_la_4ch/, heads/")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--app-dir", type=Path, default=Path("runs/review"), metavar="DIR",
                   help="the app's folder: review marks, uploads, cached cines and predictions, study databases "
                        "(default runs/review)")
    p.add_argument("--token", default=None, help=f"token of the review pages (default: ${TOKEN_ENV})")
    p.add_argument("--study", type=Path, action="append", default=[], metavar="STUDY.yaml",
                   help="serve a reader study at /study/<name>/ (repeatable)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload (default 20 MB)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps of the generator (default 25)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3.0)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0; part of the cache key)")
    p.add_argument("--no-prefetch", action="store_true",
                   help="do not generate the studies' cines at start (they are generated when first needed)")
    p.set_defaults(func=run)


def build_app(args: argparse.Namespace):
    """The FastAPI app the command serves (separate from `run` for tests)."""
    from cardiacnets.errors import ConfigError
    from cardiacnets.review.app import ReviewSettings, create_app
    from cardiacnets.review.jobs import GenerationSettings, ReviewModels

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    if args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    settings = ReviewSettings(
        data_dir=args.data, app_dir=args.app_dir, host=args.host, token=token, studies=list(args.study),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        generation=GenerationSettings(args.steps, args.guidance, args.seed), prefetch_studies=not args.no_prefetch)
    models = ReviewModels(args.model) if args.model is not None else None
    return create_app(settings, models)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    app = build_app(args)
    state = app.state.review
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"review: {len(state.manifest)} subjects from {args.data}; model: "
          f"{', '.join(state.models.generator_views) or 'no'} generator, {'heads' if state.models.has_heads else 'no heads'}")
    print(f"review: open http://{url_host}:{args.port}/cases" + (" (sign in with the token)" if state.settings.token else ""))
    for name in state.studies:
        print(f"review: study {name!r} at http://{url_host}:{args.port}/study/{name}/ "
              f"(summary: /study/{name}/admin)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0
