"""The four commerce services and the commerce CLI."""
