"""The HTTP scoring service: settings, the FastAPI app and its routes, the job store, the client, the batch runner."""
