"""The ceiling a bare HTTP client reaches against the sandbox core on this machine.

    .venv/bin/python benchmarks/http_ceiling.py                 # 50 ms, 16 threads
    .venv/bin/python benchmarks/http_ceiling.py --latency-ms 50 --concurrency 16 --requests 1600

The pipeline benchmark compares the connector with the bound N x latency / concurrency.
On a small machine the client's and the sandbox's own CPU per request keep even a bare
httpx pool below that bound; this prints how far below (GET and POST, one shared
client and one client per thread), so that the connector's figure can be read against
what the machine allows. The sandbox runs in its own process on loopback; every loop
is bounded by --requests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling import measure
from pipeline import connection_config, sandbox


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1600)
    args = parser.parse_args()
    bound = args.concurrency / (args.latency_ms / 1000)
    with tempfile.TemporaryDirectory() as tmp, sandbox(Path(tmp), args.latency_ms) as sb:
        print(f"bound: {bound:.0f} requests/s ({args.concurrency} x 1 / {args.latency_ms:g} ms)")
        core = connection_config("salesforce", sb, args.concurrency)["connections"][0]["core"]
        rates = measure(
            sb.url,
            str(sb.ca_file),
            core,
            concurrency=args.concurrency,
            requests=args.requests,
            per_thread=True,
        )
        for name, rate in rates.items():
            print(f"{name:22} {rate:6.0f} requests/s  ratio to bound {rate / bound:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
