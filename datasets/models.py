"""Clustering runs, clusters and curated rows arrive with the datasets issue."""
