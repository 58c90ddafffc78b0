"""Raw ASGI middlewares of the HTTP edge, each given its collaborators when built."""
