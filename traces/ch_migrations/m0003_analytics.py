"""Analytics on traces: retention, skip indexes for the traces page's filters, the hourly rollup the
overview reads, and annotations (tags, feedback) added after the fact. See traces/ch_sql.py for why
each choice is made."""

from traces.ch_sql import ANALYTICS_STATEMENTS

STATEMENTS = ANALYTICS_STATEMENTS
