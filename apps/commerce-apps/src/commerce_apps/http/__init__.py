"""HTTP pieces every service shares: problem+json errors, OpenAPI and docs, health, metrics."""
