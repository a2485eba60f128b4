"""Our own pgvector tables: typed `vector(D)`, HNSW (cosine), versioned COPY upserts, ANN queries.

Feast's online store keeps an untyped vector column that no ANN index can serve, so nearest-neighbour search
reads these tables instead. One table per kind of vector (64-d two-tower items, 384-d text), one row per item.

- `registry`: which model versions exist, in write order, and which one is live.
- `tables`: creating a vector table, its declared size, its HNSW index.
- `writes`: validating vectors and the versioned binary-COPY upsert.
- `queries`: loading a version's vectors, reading some by id, the HNSW query.
"""
