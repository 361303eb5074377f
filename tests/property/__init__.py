"""Tests of the commerce platform (a package so test modules can share helpers)."""
