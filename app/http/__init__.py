"""The HTTP edge: routes, middleware, problem bodies."""
