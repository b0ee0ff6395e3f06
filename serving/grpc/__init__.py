"""gRPC edge: the OIP `inference.GRPCInferenceService` and `imgserve.v1.ImageService`, served by Ray Serve's proxy."""
