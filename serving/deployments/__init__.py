"""Ray Serve deployments: the Ingress and, in the graph placement, one thin deployment per stage."""
