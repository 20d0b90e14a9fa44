"""Prior-report index: build time, memory, single-query latency and recall@10.

Fills a :class:`core_model.index.ReportIndex` with ``--n`` random unit vectors
and times top-10 queries one at a time, the way the reading assistant asks
for similar priors. Recall@10 is measured against exact search (a numpy
matrix product) on ``--queries`` held-out queries drawn from the same
distribution. Budget (issue): at 1,000,000 x 512, at most 10 ms per query and
recall@10 of at least 0.95.

Distributions (``--dist``):

* ``gaussian``: directions uniform on the sphere (i.i.d. standard normal
  coordinates, then L2-normalised). The hardest case for an ANN index: there
  are no clusters to exploit and the true neighbours are barely closer than
  the rest (top-1 cosine ~0.21 against a spread of ~0.044).
* ``clustered``: a mixture closer to real embeddings: ``--clusters`` uniform
  random centres, each vector = centre + isotropic Gaussian noise of the same
  expected norm, then L2-normalised (cosine to its centre ~0.71).

The machine may be shared; the load average is printed with the figures, and
latencies are wall-clock. A full 1,000,000-vector run of one distribution
takes about 1.5-3 minutes and peaks around 5 GiB of memory.

    python bench/index_query.py [--n 1000000] [--dim 512] [--dist gaussian|clustered|both]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core_model.index import AnnParams, ReportIndex  # noqa: E402

CHUNK = 100_000


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_vectors(
    dist: str, n: int, n_queries: int, dim: int, clusters: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Database and held-out queries, generated in chunks to keep memory at N x D float32."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng, clusters, dim) if dist == "clustered" else None

    def draw(m: int) -> np.ndarray:
        x = unit_rows(rng, m, dim)
        if centres is not None:
            x += centres[rng.integers(0, len(centres), m)]
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    db = np.empty((n, dim), np.float32)
    for start in range(0, n, CHUNK):
        db[start : start + CHUNK] = draw(min(CHUNK, n - start))
    return db, draw(n_queries)


def exact_top(db: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    out = []
    for start in range(0, len(queries), 50):
        scores = queries[start : start + 50] @ db.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out.extend(set(row.tolist()) for row in part)
    return out


def rss_gib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def run(args: argparse.Namespace, dist: str) -> None:
    print(f"\n== {dist}: {args.n:,} x {args.dim}, {args.queries} held-out queries, top-{args.k}")
    t0 = time.perf_counter()
    db, queries = make_vectors(dist, args.n, args.queries, args.dim, args.clusters, args.seed)
    print(f"generate            {time.perf_counter() - t0:7.1f} s")
    t0 = time.perf_counter()
    truth = exact_top(db, queries, args.k)
    print(f"exact ground truth  {time.perf_counter() - t0:7.1f} s")

    params = AnnParams(pq_m=args.pq_m, shards=args.shards, rerank_factor=args.rerank_factor)
    index = ReportIndex(args.dim, "bench", params)
    ids = [f"r{i}" for i in range(args.n)]
    rss0 = rss_gib()
    t0 = time.perf_counter()
    index.add(ids, db)
    add_s = time.perf_counter() - t0
    del db
    t0 = time.perf_counter()
    index.build(exact_threshold=args.exact_threshold, method=args.method)
    build_s = time.perf_counter() - t0
    print(f"add (validate+copy) {add_s:7.1f} s")
    print(f"build ({index.kind('text')})      {build_s:7.1f} s   faiss {params.to_json(args.dim)}")
    print(f"index memory        {index.memory_bytes() / 2**30:7.2f} GiB (vectors + PQ codes)")
    print(f"process RSS         {rss_gib():7.2f} GiB (was {rss0:.2f} before add; peak "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f})")

    for q in queries[: min(10, len(queries))]:  # warm caches and the thread pool
        index.query_text(q, args.k)
    latencies, recalls = [], []
    for q, true in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        hits = index.query_text(q, args.k)
        latencies.append((time.perf_counter() - t0) * 1e3)
        recalls.append(len({int(h.id[1:]) for h in hits} & true) / args.k)
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * len(latencies))) - 1)]
    print(f"latency (1 query)   mean {statistics.fmean(latencies):.2f} ms, "
          f"median {statistics.median(latencies):.2f} ms, p95 {p95:.2f} ms, "
          f"max {latencies[-1]:.2f} ms")
    print(f"recall@{args.k}           {statistics.fmean(recalls):.4f} "
          f"(min over queries {min(recalls):.2f})")
    print(f"load average        {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="database vectors")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200, help="held-out queries")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dist", choices=("gaussian", "clustered", "both"), default="gaussian")
    p.add_argument("--clusters", type=int, default=1000, help="mixture components (clustered)")
    p.add_argument("--method", choices=("auto", "exact", "ann"), default="auto")
    p.add_argument("--exact-threshold", type=int, default=50_000)
    p.add_argument("--pq-m", type=int, default=AnnParams.pq_m, help="0 = dim/2")
    p.add_argument("--shards", type=int, default=AnnParams.shards)
    p.add_argument("--rerank-factor", type=int, default=AnnParams.rerank_factor)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for dist in ("gaussian", "clustered") if args.dist == "both" else (args.dist,):
        run(args, dist)


if __name__ == "__main__":
    main()
