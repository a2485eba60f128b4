"""The KServe predictor of the recommender (`python -m serving`, `recsys serve`)."""

import os

# Before numpy loads (importing this package comes first on both entry points): a threaded OpenBLAS
# matrix-vector product over the item matrix waits for its worker threads, which on a busy 2-core machine
# cost up to 28 ms at p99 instead of 0.1 ms single-threaded; requests run in parallel threads anyway.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
