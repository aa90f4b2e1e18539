"""The traces table."""

STATEMENTS = [
    """
    CREATE TABLE IF NOT EXISTS traces (
        trace_id UUID,
        project_id UInt64,
        timestamp DateTime64(3, 'UTC'),
        api_key_id UInt64,
        requested_model LowCardinality(String),
        alias LowCardinality(String),
        resolved_model LowCardinality(String),
        provider LowCardinality(String),
        request_messages String CODEC(ZSTD(3)),
        request_params String CODEC(ZSTD(3)),
        response_message String CODEC(ZSTD(3)),
        finish_reason LowCardinality(String),
        stream Bool,
        status UInt16,
        error_class LowCardinality(String),
        error_message String,
        prompt_tokens UInt32,
        completion_tokens UInt32,
        cached_tokens UInt32,
        cost_input_usd Nullable(Float64),
        cost_output_usd Nullable(Float64),
        cost_total_usd Nullable(Float64),
        latency_ms Float32,
        ttft_ms Nullable(Float32),
        overhead_ms Float32,
        user String,
        metadata Map(String, String),
        tags Array(String),
        -- Lookups by id (GET /api/traces/<id>) skip granules through this bloom filter.
        INDEX idx_trace_id trace_id TYPE bloom_filter GRANULARITY 4
    )
    ENGINE = MergeTree
    -- Monthly partitions keep retention (DROP PARTITION) cheap.
    PARTITION BY toYYYYMM(timestamp)
    -- Every read is scoped to one project and almost every one to a time range: project first,
    -- then time, so a project's recent traces are contiguous; trace_id makes the key unique.
    ORDER BY (project_id, timestamp, trace_id)
    """,
]
