"""Routing policies and error profiles arrive with the routing issue."""
