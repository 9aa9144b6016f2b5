"""``python -m sandbox``: the sandbox in the foreground (as ``connector sandbox``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sandbox.server import DEFAULT_CA_FILE, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="The local HTTPS sandbox imitating the referrals API, Salesforce and Dataverse.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback only unless --allow-remote")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--opportunities", type=int, default=500, help="to seed in each CRM")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency of every call")
    parser.add_argument("--state", type=Path, default=None, help="keep the data in this file")
    parser.add_argument("--ca-file", type=Path, default=DEFAULT_CA_FILE)
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        serve(
            host=args.host,
            port=args.port,
            opportunities=args.opportunities,
            seed=args.seed,
            latency_ms=args.latency_ms,
            state_file=args.state,
            ca_file=args.ca_file,
            allow_remote=args.allow_remote,
        )
    except ValueError as exc:
        parser.exit(4, f"{exc}\n")


if __name__ == "__main__":
    main()
