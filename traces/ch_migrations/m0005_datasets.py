"""Prompt embedding cache and cluster assignments (datasets/ch_sql.py)."""

from datasets.ch_sql import STATEMENTS as STATEMENTS
