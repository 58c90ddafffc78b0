"""Integration tests of the API key store, the verifier cache, the key CLI and the dev key."""
