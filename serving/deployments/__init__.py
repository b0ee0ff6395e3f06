"""Ray Serve deployments: thin wrappers around `pipelines` functions and `serving.backends`."""
