"""A daily rollup chained on the hourly one, so month-long overviews merge ~24x fewer rows,
backfilled from traces_hourly. See traces/ch_sql.py."""

from traces.ch_sql import DAILY_STATEMENTS

STATEMENTS = DAILY_STATEMENTS
