"""Revisions of the notification database, oldest first by their down_revision chain."""
