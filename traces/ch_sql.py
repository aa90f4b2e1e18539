"""ClickHouse DDL and queries for traces. Parameters are always bound by the driver."""

from __future__ import annotations

from .histogram import hist_sql

TRACES_TABLE = "traces"
DEFAULT_RETENTION_DAYS = 90
MAX_RETENTION_DAYS = 3650
# The text indexes of full-text search (m0008) are built when parts merge, not on insert, where
# tokenizing prompt and response would add ~10 us to ClickHouse's ~15 per row (bench/
# trace_ingest.py). A part not merged yet has no such index and is read whole by a search: the same
# answer, and such parts are the newest and small (the first merges come within seconds).
TEXT_INDEXES = ("idx_prompt_text", "idx_response_text")

# Columns written by the trace writer, in insert order, with the default used when a record
# lacks the field. Costs default to NULL: an unknown price is recorded as unknown, never as 0.
TRACE_COLUMNS: dict[str, object] = {
    "trace_id": None,
    "project_id": 0,
    "timestamp": None,
    "api_key_id": 0,
    "endpoint": "chat",
    "requested_model": "",
    "alias": "",
    "resolved_model": "",
    "provider": "",
    "request_messages": "[]",
    "request_params": "{}",
    "response_message": "",
    "finish_reason": "",
    "stream": False,
    "status": 200,
    "error_class": "",
    "error_message": "",
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cached_tokens": 0,
    "cost_input_usd": None,
    "cost_output_usd": None,
    "cost_total_usd": None,
    "latency_ms": 0.0,
    "ttft_ms": None,
    "overhead_ms": 0.0,
    # (target, status, error_class, latency_ms) per upstream call; see ch_migrations/m0002.
    "attempts": [],
    "retries": 0,
    "fallbacks": 0,
    # Auto-routing (ch_migrations/m0006): empty unless the request was routed by a policy.
    "route_policy": "",
    "route_cluster": "",
    "route_predicted": {},
    "route_decision_ms": 0.0,
    "route_note": "",
    "user": "",
    "metadata": {},
    "tags": [],
    "retention_days": DEFAULT_RETENTION_DAYS,  # see ANALYTICS_STATEMENTS
}

# Shown by the list endpoint; the large text columns stay out of it.
TRACE_LIST_COLUMNS = [c for c in TRACE_COLUMNS if c not in ("request_messages", "request_params", "response_message")]

# ---------------------------------------------------------------- analytics (m0003)
# The DDL of ch_migrations/m0003_analytics.py, kept here with the reasons. A change to any of it is a
# new numbered migration, never an edit of this list.
ROLLUP_TABLE = "traces_hourly"
ANNOTATIONS_TABLE = "trace_annotations"
ANNOTATION_COLUMNS = ["project_id", "trace_id", "created_at", "user_id", "kind", "tag", "score", "comment"]
QUANTILES = (0.5, 0.95, 0.99)

# One rollup row per project, hour and dimension; the model is the one that answered, else the one asked.
_ROLLUP_SELECT = """project_id, toStartOfHour(timestamp) AS hour,
    if(resolved_model != '', resolved_model, requested_model) AS model, provider, alias, api_key_id, endpoint,
    count() AS requests, countIf(status != 200) AS errors, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens,
    sum(ifNull(cost_total_usd, 0)) AS cost_usd, countIf(status = 200 AND cost_total_usd IS NULL) AS unpriced,
    quantilesTDigestState(0.5, 0.95, 0.99)(latency_ms) AS latency,
    quantilesTDigestIfState(0.5, 0.95, 0.99)(ifNull(ttft_ms, 0), ttft_ms IS NOT NULL) AS ttft,
    max(retention_days) AS retention_days"""
_ROLLUP_GROUP = "GROUP BY project_id, hour, model, provider, alias, api_key_id, endpoint"

ANALYTICS_STATEMENTS = [
    # Retention per project: the writer stamps each row with its project's setting, and the TTL
    # drops rows past it at merge time. A per-row column (not one TTL per project) because ClickHouse
    # has a single TTL expression per table; changing a project's setting rewrites its rows' value
    # with a mutation (services.retention_set), which is rare and off the hot path.
    f"ALTER TABLE traces ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT {DEFAULT_RETENTION_DAYS}",
    "ALTER TABLE traces MODIFY TTL toDateTime(timestamp) + toIntervalDay(retention_days)",
    # Full-text search (`q`) is a case-insensitive substring match over prompt and response:
    # lowerUTF8(col) LIKE '%q%'. An n-gram bloom filter over the lower-cased text is the skip index
    # LIKE can use (a token bloom filter only helps whole-token matches, and people search for
    # fragments of words); trigrams, 64 KiB per index granule of 8,192 rows, as ClickHouse's docs
    # size it for long text. It skips granules that cannot contain the phrase; it never gives a wrong
    # answer, only a slower one on a false positive. Inserts leave them to merges (TEXT_INDEXES).
    "ALTER TABLE traces ADD INDEX IF NOT EXISTS idx_prompt_ngram lowerUTF8(request_messages)"
    " TYPE ngrambf_v1(3, 65536, 2, 0) GRANULARITY 1",
    "ALTER TABLE traces ADD INDEX IF NOT EXISTS idx_response_ngram lowerUTF8(response_message)"
    " TYPE ngrambf_v1(3, 65536, 2, 0) GRANULARITY 1",
    # metadata key / key=value and tag filters are needle-in-a-haystack membership tests: bloom
    # filters over the map's keys and values and over the tags array (mapContains, m[k] = v, has()).
    "ALTER TABLE traces ADD INDEX IF NOT EXISTS idx_metadata_keys mapKeys(metadata)"
    " TYPE bloom_filter(0.01) GRANULARITY 1",
    "ALTER TABLE traces ADD INDEX IF NOT EXISTS idx_metadata_values mapValues(metadata)"
    " TYPE bloom_filter(0.01) GRANULARITY 1",
    "ALTER TABLE traces ADD INDEX IF NOT EXISTS idx_tags tags TYPE bloom_filter(0.01) GRANULARITY 1",
    # An API key's traces are a small slice of a project's: a bloom filter on its id.
    "ALTER TABLE traces ADD INDEX IF NOT EXISTS idx_api_key api_key_id TYPE bloom_filter(0.01) GRANULARITY 1",
    # min cost / min latency: minmax ranges per granule skip the bulk of cheap, fast traffic when
    # expensive or slow calls bunch in time (a bad hour, one big batch job); cheap to keep otherwise.
    "ALTER TABLE traces ADD INDEX IF NOT EXISTS idx_latency latency_ms TYPE minmax GRANULARITY 1",
    "ALTER TABLE traces ADD INDEX IF NOT EXISTS idx_cost cost_total_usd TYPE minmax GRANULARITY 1",
    # The overview's rollup: one row per project, hour and dimension the overview filters by, so a
    # 30-day overview reads ~720 rows per model instead of every trace. Sums are plain columns;
    # latency and TTFT keep t-digest states, which merge across hours into p50/p95/p99.
    # Ordered by project then hour like the traces table (every read is one project and a range).
    f"""
    CREATE TABLE IF NOT EXISTS {ROLLUP_TABLE} (
        project_id UInt64,
        hour DateTime('UTC'),
        model LowCardinality(String),
        provider LowCardinality(String),
        alias LowCardinality(String),
        api_key_id UInt64,
        endpoint LowCardinality(String),
        requests SimpleAggregateFunction(sum, UInt64),
        errors SimpleAggregateFunction(sum, UInt64),
        prompt_tokens SimpleAggregateFunction(sum, UInt64),
        completion_tokens SimpleAggregateFunction(sum, UInt64),
        cached_tokens SimpleAggregateFunction(sum, UInt64),
        cost_usd SimpleAggregateFunction(sum, Float64),
        unpriced SimpleAggregateFunction(sum, UInt64),
        latency AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float32),
        ttft AggregateFunction(quantilesTDigestIf(0.5, 0.95, 0.99), Float32, UInt8),
        retention_days SimpleAggregateFunction(max, UInt16)
    )
    ENGINE = AggregatingMergeTree
    PARTITION BY toYYYYMM(hour)
    ORDER BY (project_id, hour, model, provider, alias, api_key_id, endpoint)
    -- The rollup lives as long as the traces it sums.
    TTL hour + toIntervalDay(retention_days)
    """,
    # Backfill what existed before the view (skipped once the view exists, so a rerun never counts a
    # row twice; migrations run with the engine stopped), then keep the rollup current on insert.
    f"INSERT INTO {ROLLUP_TABLE} SELECT {_ROLLUP_SELECT} FROM traces"  # noqa: S608 (constants only)
    " WHERE (SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'traces_hourly_mv') = 0"
    f" {_ROLLUP_GROUP}",
    f"CREATE MATERIALIZED VIEW IF NOT EXISTS traces_hourly_mv TO {ROLLUP_TABLE} AS"  # noqa: S608
    f" SELECT {_ROLLUP_SELECT} FROM traces {_ROLLUP_GROUP}",
    # Tags and feedback added after a trace was written. Traces are never updated in place (a
    # mutation per click would rewrite whole parts), so annotations are an append-only table joined
    # on read; a plain MergeTree never collapses rows on merge, so every annotation survives and the
    # latest one wins when read. Ordered like traces so a trace's annotations sit together.
    f"""
    CREATE TABLE IF NOT EXISTS {ANNOTATIONS_TABLE} (
        project_id UInt64,
        trace_id UUID,
        created_at DateTime64(3, 'UTC'),
        user_id UInt64,
        kind LowCardinality(String),  -- 'tag', 'untag' or 'feedback'
        tag String,
        score Nullable(Float32),
        comment String
    )
    ENGINE = MergeTree
    ORDER BY (project_id, trace_id, created_at)
    """,
]

# ---------------------------------------------------------------- histogram rollup (m0004)
# The DDL of ch_migrations/m0004_rollup_histograms.py. The overview was bound by merging the
# rollup's t-digest states (137 ms for latency, 61 ms for TTFT per query over a month at 10M
# traces), so m0004 rebuilds traces_hourly with fixed log-spaced bucket counts instead
# (traces/histogram.py: 142 buckets, 1 ms to 10.4 min, quantiles within 4.76%). Kept as sparse
# maps summed on merge (SimpleAggregateFunction(sumMap)): an hour of one model touches a few dozen
# buckets, and summing maps read back ~2x faster than merging states of dense -ForEach arrays and
# ~3x faster than dense plain arrays (measured on 52k rollup rows). The min and max of each measure
# clamp the answer: never worse, and exact for a single value.


def _hist_rollup_table(name: str, period: str) -> str:
    """CREATE TABLE of a histogram rollup: one row per project, `period` (its start) and dimension."""
    return f"""
    CREATE TABLE {name} (
        project_id UInt64,
        {period} DateTime('UTC'),
        model LowCardinality(String),
        provider LowCardinality(String),
        alias LowCardinality(String),
        api_key_id UInt64,
        endpoint LowCardinality(String),
        requests SimpleAggregateFunction(sum, UInt64),
        errors SimpleAggregateFunction(sum, UInt64),
        prompt_tokens SimpleAggregateFunction(sum, UInt64),
        completion_tokens SimpleAggregateFunction(sum, UInt64),
        cached_tokens SimpleAggregateFunction(sum, UInt64),
        cost_usd SimpleAggregateFunction(sum, Float64),
        unpriced SimpleAggregateFunction(sum, UInt64),
        latency_hist SimpleAggregateFunction(sumMap, Map(UInt8, UInt64)),
        latency_min SimpleAggregateFunction(min, Float32),
        latency_max SimpleAggregateFunction(max, Float32),
        ttft_hist SimpleAggregateFunction(sumMap, Map(UInt8, UInt64)),
        ttft_min SimpleAggregateFunction(min, Nullable(Float32)),
        ttft_max SimpleAggregateFunction(max, Nullable(Float32)),
        retention_days SimpleAggregateFunction(max, UInt16)
    )
    ENGINE = AggregatingMergeTree
    PARTITION BY toYYYYMM({period})
    ORDER BY (project_id, {period}, model, provider, alias, api_key_id, endpoint)
    TTL {period} + toIntervalDay(retention_days)
    """


_HIST_ROLLUP_SELECT = f"""project_id, toStartOfHour(timestamp) AS hour,
    if(resolved_model != '', resolved_model, requested_model) AS model, provider, alias, api_key_id, endpoint,
    count() AS requests, countIf(status != 200) AS errors, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens,
    sum(ifNull(cost_total_usd, 0)) AS cost_usd, countIf(status = 200 AND cost_total_usd IS NULL) AS unpriced,
    {hist_sql("latency_ms")} AS latency_hist, min(latency_ms) AS latency_min, max(latency_ms) AS latency_max,
    {hist_sql("assumeNotNull(ttft_ms)", "ttft_ms IS NOT NULL")} AS ttft_hist,
    min(ttft_ms) AS ttft_min, max(ttft_ms) AS ttft_max,
    max(retention_days) AS retention_days"""
_HOURLY_VIEW = (
    f"CREATE MATERIALIZED VIEW traces_hourly_mv TO {ROLLUP_TABLE} AS"  # noqa: S608
    f" SELECT {_HIST_ROLLUP_SELECT} FROM traces {_ROLLUP_GROUP}"
)

ROLLUP_HIST_STATEMENTS = [
    # The rollup is derived data: m0004 drops it and rebuilds it from the traces table, so a rerun
    # (after a failure part way) gives the same table. Migrations run with the engine stopped, so
    # no insert lands between the drop of the old view and the backfill.
    "DROP VIEW IF EXISTS traces_hourly_mv",
    f"DROP TABLE IF EXISTS {ROLLUP_TABLE}",
    # Same key, partitions and TTL as m0003's table (reasons there); only the latency and TTFT
    # columns change. ttft_min/max are Nullable so hours without a streamed call leave them alone.
    _hist_rollup_table(ROLLUP_TABLE, "hour"),
    f"INSERT INTO {ROLLUP_TABLE} SELECT {_HIST_ROLLUP_SELECT} FROM traces {_ROLLUP_GROUP}",  # noqa: S608
    _HOURLY_VIEW,
]

# ---------------------------------------------------------------- daily rollup (m0007)
# The hourly rollup summed again per UTC day, by a view chained on it (each insert into
# traces_hourly, itself made by traces_hourly_mv, adds its rows here). A 30-day overview merges
# the histograms of ~30 rows per model here instead of ~720 there; the hours at either end of a
# window that cover part of a day still come from the hourly rollup (stats._source).
DAILY_TABLE = "traces_daily"
# Rows of either rollup added up: by the daily view, and by every read of the overview (traces/stats.py).
ROLLUP_MERGE = """sum(requests) AS requests, sum(errors) AS errors, sum(cost_usd) AS cost_usd,
    sum(unpriced) AS unpriced, sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens, sum(cached_tokens) AS cached_tokens,
    sumMap(latency_hist) AS latency_hist, min(latency_min) AS latency_min, max(latency_max) AS latency_max,
    sumMap(ttft_hist) AS ttft_hist, min(ttft_min) AS ttft_min, max(ttft_max) AS ttft_max"""
_DAILY_SELECT = f"""project_id, toStartOfDay(hour) AS day, model, provider, alias, api_key_id, endpoint,
    {ROLLUP_MERGE}, max(retention_days) AS retention_days"""
_DAILY_GROUP = "GROUP BY project_id, day, model, provider, alias, api_key_id, endpoint"

DAILY_STATEMENTS = [
    # Derived data, rebuilt from traces_hourly: a rerun after a failure part way gives the same table.
    "DROP VIEW IF EXISTS traces_daily_mv",
    f"DROP TABLE IF EXISTS {DAILY_TABLE}",
    # The hourly table's columns by day; a day's row lives until the day's start + the retention.
    _hist_rollup_table(DAILY_TABLE, "day"),
    f"INSERT INTO {DAILY_TABLE} SELECT {_DAILY_SELECT} FROM {ROLLUP_TABLE} {_DAILY_GROUP}",  # noqa: S608
    f"CREATE MATERIALIZED VIEW traces_daily_mv TO {DAILY_TABLE} AS"  # noqa: S608
    f" SELECT {_DAILY_SELECT} FROM {ROLLUP_TABLE} {_DAILY_GROUP}",
]

# ---------------------------------------------------------------- text indexes, smaller granules (m0008)
# Full-text search (`q`) stays a case-insensitive substring match, lowerUTF8(col) LIKE '%q%'
# (filters.where), now served by inverted text indexes instead of m0003's n-gram bloom filters.
# Measured at 10M traces (docs/benchmarks.md): a common word's first page took ~250 ms because the
# bloom filters were read for every granule and skipped none; a reference id's ~450 ms.
# - A word, or a fragment of one (4+ letters or digits), is answered by the index alone: ClickHouse
#   scans the index dictionary for the tokens containing it and reads their postings, so no text is
#   read (use_text_index_like_evaluation_by_dictionary_scan, for the splitByNonAlpha tokenizer).
# - A pattern with separators ("TX-3f9a2c1b0d", "lost my card") is not; filters.where adds its
#   longest runs as conditions the index answers, and the granules holding them are read to check
#   the whole pattern. Hence granules of at most 1 MiB (index_granularity_bytes; ~700-1,200
#   typical traces instead of 8,192): such a check reads 7x less text. The primary key and the other
#   skip indexes just get more, finer marks.
# - Such matches are scattered in time, and the list reads ~35 small columns for each one's granule:
#   compressed blocks of 16 KiB instead of 64 KiB for those columns (min_compress_block_size; the
#   text columns still fill blocks of up to 1 MiB) halved a reference id's page (~230 -> ~115 ms),
#   for 1.5% more disk.
# - Building both indexes costs ~10 us per row against ~16 for the n-gram filters, and ~50 MiB per
#   million traces on disk against ~5.
# - Parts written by the trace writer have no text index until they merge (TEXT_INDEXES), and the
#   last few parts of a month would never merge by themselves once the month's inserts stop: every
#   all-time search would read them whole (~60 ms at 10M traces). So a partition whose parts are all
#   older than an hour is merged into one (min_age_to_force_merge_*): a closed month once, an hour
#   after its last insert; the current month only after an hour without traffic (a quiet night).
# index_granularity_bytes can only be set when a table is created, so m0008 copies the traces into
# a new table and swaps the names. Every statement can be rerun after a failure without losing a
# row: the copy is dropped and redone only while `traces` still holds everything, and after the
# swap the old table is a full copy. (On a cluster, a rerun after the swap stops at the CREATE: the
# new local table's replication path is taken; drop traces_m0008 by hand.) Migrations run with the
# engine stopped, so no insert lands between the copy and the swap.
REBUILT_TABLE = "traces_m0008"
FORCE_MERGE_AFTER_S = 3600
_TEXT_INDEX = "TYPE text(tokenizer = splitByNonAlpha)"


def _traces_table(name: str) -> str:
    """CREATE TABLE of the traces table as of m0008 (m0001 + m0002 + m0003 + m0006, new indexes)."""
    return f"""
    CREATE TABLE {name} (
        trace_id UUID,
        project_id UInt64,
        timestamp DateTime64(3, 'UTC'),
        api_key_id UInt64,
        endpoint LowCardinality(String) DEFAULT 'chat',
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
        attempts Array(Tuple(target String, status UInt16, error_class String, latency_ms Float32)),
        retries UInt16 DEFAULT 0,
        fallbacks UInt16 DEFAULT 0,
        route_policy LowCardinality(String) DEFAULT '',
        route_cluster String DEFAULT '',
        route_predicted Map(String, Float32),
        route_decision_ms Float32 DEFAULT 0,
        route_note String DEFAULT '',
        user String,
        metadata Map(String, String),
        tags Array(String),
        retention_days UInt16 DEFAULT {DEFAULT_RETENTION_DAYS},
        -- Reasons for the other indexes: m0001 (trace id) and ANALYTICS_STATEMENTS (m0003).
        INDEX idx_trace_id trace_id TYPE bloom_filter GRANULARITY 4,
        INDEX idx_prompt_text lowerUTF8(request_messages) {_TEXT_INDEX},
        INDEX idx_response_text lowerUTF8(response_message) {_TEXT_INDEX},
        INDEX idx_metadata_keys mapKeys(metadata) TYPE bloom_filter(0.01) GRANULARITY 1,
        INDEX idx_metadata_values mapValues(metadata) TYPE bloom_filter(0.01) GRANULARITY 1,
        INDEX idx_tags tags TYPE bloom_filter(0.01) GRANULARITY 1,
        INDEX idx_api_key api_key_id TYPE bloom_filter(0.01) GRANULARITY 1,
        INDEX idx_latency latency_ms TYPE minmax GRANULARITY 1,
        INDEX idx_cost cost_total_usd TYPE minmax GRANULARITY 1
    )
    ENGINE = MergeTree
    PARTITION BY toYYYYMM(timestamp)
    ORDER BY (project_id, timestamp, trace_id)
    TTL toDateTime(timestamp) + toIntervalDay(retention_days)
    SETTINGS index_granularity = 8192, index_granularity_bytes = 1048576, min_compress_block_size = 16384,
        min_age_to_force_merge_seconds = {FORCE_MERGE_AFTER_S}, min_age_to_force_merge_on_partition_only = 1
    """


_ALL_COLUMNS = ", ".join(TRACE_COLUMNS)
TEXT_INDEX_STATEMENTS = [
    # The rollup view stays off while rows are copied (the rollups already count them).
    "DROP VIEW IF EXISTS traces_hourly_mv",
    f"DROP TABLE IF EXISTS {REBUILT_TABLE}",
    _traces_table(REBUILT_TABLE),
    # Synchronous on a cluster too (the Distributed table would otherwise forward it later).
    f"INSERT INTO {REBUILT_TABLE} ({_ALL_COLUMNS}) SELECT {_ALL_COLUMNS} FROM traces"  # noqa: S608
    " SETTINGS distributed_foreground_insert = 1",
    f"EXCHANGE TABLES traces AND {REBUILT_TABLE}",
    f"DROP TABLE {REBUILT_TABLE}",
    _HOURLY_VIEW,
]
