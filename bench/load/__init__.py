"""Load scenarios: wrk against Granian on 127.0.0.1, the sandbox, PostgreSQL and Redis."""
