"""The hourly rollup rebuilt with fixed log-bucket latency and TTFT histograms instead of t-digest
states (faster to merge over a month), backfilled from the traces table. See traces/ch_sql.py."""

from traces.ch_sql import ROLLUP_HIST_STATEMENTS

STATEMENTS = ROLLUP_HIST_STATEMENTS
