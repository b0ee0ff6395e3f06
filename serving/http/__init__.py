"""HTTP edge: FastAPI routers for the Open Inference Protocol (`/v2`) and the image API (`/v1`)."""
