"""HTTP adapter: routes, schemas, dependencies and the problem+json error handler."""
