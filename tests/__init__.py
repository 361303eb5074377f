"""Tests of the commerce platform (a package so test modules can share helpers)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The checkout's root, for the tests that read its files (README, docs, infra)."""
