"""Gateway reliability and more endpoints: what kind of call a trace is, and every upstream attempt
(retries, fallbacks) made to answer it."""

STATEMENTS = [
    # 'chat', 'embeddings' or 'messages' (Anthropic-format inbound).
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS endpoint LowCardinality(String) DEFAULT 'chat' AFTER api_key_id",
    # One entry per upstream call, in order: which target, its HTTP-like status, error class, latency.
    """ALTER TABLE traces ADD COLUMN IF NOT EXISTS attempts
       Array(Tuple(target String, status UInt16, error_class String, latency_ms Float32)) AFTER overhead_ms""",
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS retries UInt16 DEFAULT 0 AFTER attempts",
    "ALTER TABLE traces ADD COLUMN IF NOT EXISTS fallbacks UInt16 DEFAULT 0 AFTER retries",
]
