"""Distillation jobs and students arrive with the distillation issue."""
