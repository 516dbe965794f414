"""`POST /api/v1/charge` against `GET /health` on the same served budget-mcp (the HTTP floor), in turn.

    python benchmarks/api_bench.py [--requests N] [--quick]

A real `budget-mcp serve --transport http` on a SQLite ledger in a temporary directory, one keep-alive
client; rounds of health checks and charges alternate so drift on the machine hits both alike. Prints the
p50 and p99 of each and the ratio of the p50s (the issue's target: a charge at most 2x the floor).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import serving

TOKEN = "bench-token-0123456789abcdef"


def timed(client: httpx2.Client, method: str, path: str, **kwargs: object) -> float:
    start = time.perf_counter()
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    total = 200 if args.quick else args.requests
    rounds = 10
    with tempfile.TemporaryDirectory() as tmp, serving("http", Path(tmp) / "ledger.db", BUDGET_MCP_TOKEN=TOKEN) as base:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx2.Client(base_url=base, headers=headers, timeout=30) as client:
            client.post("/api/v1/allocate", json={"budget_id": "bench"})
            for _ in range(50):  # warm up both paths
                timed(client, "GET", "/health")
                timed(client, "POST", "/api/v1/charge", json={"budget_id": "bench", "cost_usd": "0.001"})
            health: list[float] = []
            charge: list[float] = []
            for _ in range(rounds):
                health += [timed(client, "GET", "/health") for _ in range(total // rounds)]
                body = {"budget_id": "bench", "model": "gpt-4o", "input_tokens": 1200, "output_tokens": 300}
                charge += [timed(client, "POST", "/api/v1/charge", json=body) for _ in range(total // rounds)]

    def line(name: str, values: list[float]) -> str:
        cuts = statistics.quantiles(values, n=100)
        return f"{name:<22} p50 {statistics.median(values):7.3f} ms   p99 {cuts[98]:7.3f} ms"

    print(f"{total} requests each, one keep-alive client, SQLite ledger")
    print(line("GET /health", health))
    print(line("POST /api/v1/charge", charge))
    print(f"charge p50 / health p50: {statistics.median(charge) / statistics.median(health):.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
