"""The HTTP protocol adapter: parse requests, map domain errors to statuses, stream responses."""
