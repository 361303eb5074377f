"""Revisions of the inventory database, oldest first by their down_revision chain."""
