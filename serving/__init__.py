"""imgserve: a Ray Serve graph for image classification, quality and metadata.

The public surface is small: build the application (`build_app`), read configs (`ModelConfig`,
`ServerSettings`), and talk to a running server (`serving.client`).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
