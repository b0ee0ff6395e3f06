"""Open Inference Protocol (KServe v2) tensor encoding shared by the HTTP and gRPC edges."""
