"""FastAPI application: routes, schemas, auth, error envelope."""
