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
                    "optional. Binds 127.0.0.1 unless --host says otherwise. The pages always need a token: "
                    f"--token or ${TOKEN_ENV} (at least 16 characters; required for any other address or a served "
                    "study), else a new one per launch, printed in the URL to open. See SECURITY.md.")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET", help="training set folder (cardiacnets preprocess)")
    p.add_argument("--model", type=Path, metavar="DIR", help="run folder with generator/, generator_la_4ch/, heads/")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--app-dir", type=Path, default=Path("runs/review"), metavar="DIR",
                   help="the app's folder: review marks, uploads, cached cines and predictions, study databases "
                        "(default runs/review)")
    p.add_argument("--token", default=None,
                   help=f"token of the review pages, at least 16 characters (default: ${TOKEN_ENV}, else a new "
                        "random one per launch)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a further Host name or address the app answers, as readers' browsers reach it "
                        "(study.example.org, *.example.org, 192.168.1.20; repeatable). 127.0.0.1, localhost and "
                        "--host are always allowed; any other Host gets 400")
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
        allowed_hosts=list(args.allowed_host),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        generation=GenerationSettings(args.steps, args.guidance, args.seed), prefetch_studies=not args.no_prefetch)
    models = ReviewModels(args.model) if args.model is not None else None
    return create_app(settings, models)


def launch_url(host: str, port: int, token: str | None, path: str = "/cases") -> str:
    """The URL to open: ``http://HOST:PORT/cases``, with ``?token=`` when the token was made for this launch."""
    from urllib.parse import quote

    url_host = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        url_host = "127.0.0.1"
    url = f"http://{url_host}:{port}{path}"
    return url + f"?token={quote(token, safe='')}" if token else url


def run(args: argparse.Namespace) -> int:
    import uvicorn

    app = build_app(args)
    state = app.state.review
    print(f"review: {len(state.manifest)} subjects from {args.data}; model: "
          f"{', '.join(state.models.generator_views) or 'no'} generator, {'heads' if state.models.has_heads else 'no heads'}",
          flush=True)
    if state.token_generated:
        print(f"review: open {launch_url(args.host, args.port, state.token)}  (token made for this launch; "
              "set --token or $CARDIACNETS_REVIEW_TOKEN to keep one)", flush=True)
    else:
        print(f"review: open {launch_url(args.host, args.port, None)} (sign in with the token)", flush=True)
    if args.host in ("0.0.0.0", "::") and not args.allowed_host:
        print("review: note: only requests for 127.0.0.1 or localhost are answered; name the address readers use "
              "with --allowed-host", flush=True)
    for name in state.studies:
        print(f"review: study {name!r} at {launch_url(args.host, args.port, None, f'/study/{name}/')} "
              f"(summary: /study/{name}/admin)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False)
    return 0
