"""hnswlib on the keys and queries `scache-bench hnsw` wrote: build and query times, recall@k; one JSON line on stdout.

Never run by tests. Arguments: keys.f32 queries.f32 n d q k M efC efS threads (raw little-endian float32, row-major).
"""
import json
import sys
import time

import hnswlib
import numpy as np


def timed(action):
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv):
    keys_path, queries_path = argv[0], argv[1]
    n, d, q, k, m, efc, efs, threads = (int(a) for a in argv[2:10])
    keys = np.fromfile(keys_path, dtype=np.float32).reshape(n, d)
    queries = np.fromfile(queries_path, dtype=np.float32).reshape(q, d)

    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(max_elements=n, ef_construction=efc, M=m, random_seed=100)
    index.set_num_threads(threads)
    _, build_wall, build_cpu = timed(lambda: index.add_items(keys, np.arange(n)))
    index.set_ef(max(efs, k))
    index.knn_query(queries[: min(16, q)], k=k)  # warm-up, as the C# side does
    rounds = [timed(lambda: index.knn_query(queries, k=k)) for _ in range(3)]  # the median round is reported
    (found, _), query_wall, query_cpu = sorted(rounds, key=lambda r: r[1])[1]

    hits = 0
    for start in range(0, q, 256):
        sims = queries[start:start + 256] @ keys.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row in range(top.shape[0]):
            hits += len(set(top[row].tolist()) & set(found[start + row].tolist()))

    print(json.dumps({
        "hnswlib": getattr(hnswlib, "__version__", "?"),
        "numpy": np.__version__,
        "buildSeconds": build_wall, "buildCpuSeconds": build_cpu,
        "querySeconds": query_wall, "queryCpuSeconds": query_cpu,
        "queryRoundSeconds": [r[1] for r in rounds],
        "recall": hits / (q * k),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
