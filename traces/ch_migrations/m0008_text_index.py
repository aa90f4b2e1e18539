"""Full-text search from inverted text indexes instead of n-gram bloom filters, on granules of at
most 1 MiB: the traces table copied into a new one and swapped in. See traces/ch_sql.py."""

from traces.ch_sql import TEXT_INDEX_STATEMENTS

STATEMENTS = TEXT_INDEX_STATEMENTS
