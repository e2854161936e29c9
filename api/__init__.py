"""batchcast_api: the results API and the store managers' page (FastAPI, served by uvicorn)."""
