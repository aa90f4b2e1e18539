"""ClickHouse tables of the datasets app (applied by traces/ch_migrations/m0005_datasets.py)."""

EMBEDDINGS_TABLE = "prompt_embeddings"
ASSIGNMENTS_TABLE = "cluster_assignments"

EMBEDDING_COLUMNS = ("model", "content_hash", "vector")
ASSIGNMENT_COLUMNS = ("project_id", "run_id", "trace_id", "cluster_id", "distance", "source", "assigned_at")

STATEMENTS = [
    # A prompt is embedded once per model whatever the project or run: keyed by the model and a
    # hash of the exact text embedded. ReplacingMergeTree folds the duplicates two concurrent runs
    # may write; readers never depend on that (any copy of a vector is the same vector). The vector
    # is its raw float32 bytes (little-endian): read back with one np.frombuffer instead of 384
    # Python floats per prompt (38M objects for a 100k-trace run).
    f"""
    CREATE TABLE IF NOT EXISTS {EMBEDDINGS_TABLE} (
        model LowCardinality(String),
        content_hash FixedString(16),
        vector String,  -- 384 float32 = 1,536 bytes
        created_at DateTime DEFAULT now()
    )
    ENGINE = ReplacingMergeTree
    ORDER BY (model, content_hash)
    """,
    # Which cluster each trace fell in, per run. Append-only: merges, splits and incremental
    # assignment add rows and the latest row per (run, trace) wins (argMax on assigned_at), so
    # history is kept and nothing is rewritten. cluster_id is the Django Cluster pk, 0 = unclustered.
    # Ordered by run then trace: a run's members are read together, a trace's rows sit together.
    f"""
    CREATE TABLE IF NOT EXISTS {ASSIGNMENTS_TABLE} (
        project_id UInt64,
        run_id UInt64,
        trace_id UUID,
        cluster_id UInt64,
        distance Float32,
        source LowCardinality(String),  -- 'run', 'incremental', 'merge' or 'split'
        assigned_at DateTime64(3, 'UTC')
    )
    ENGINE = MergeTree
    ORDER BY (project_id, run_id, trace_id, assigned_at)
    """,
]
