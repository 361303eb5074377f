"""Revisions of the order database, oldest first by their down_revision chain."""
