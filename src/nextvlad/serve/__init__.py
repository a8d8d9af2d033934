"""`nextvlad serve`: the Open Inference Protocol (KServe v2) over REST, with dynamic batching.

``nextvlad.serve.app.create_app(backend, settings)`` is the FastAPI application;
``nextvlad.serve.backends.load_backend`` loads what it runs. Importing this package needs
nothing beyond the core; its ``app`` and ``metrics`` modules need the ``serve`` extra.
"""
