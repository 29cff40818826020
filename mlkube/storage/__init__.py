"""Models from a storage URI: parsing (pure), S3 request signing (pure) and `mlkube fetch`.

The operator, the API schema and the runtime share :mod:`mlkube.storage.uri`, so that the
three agree on which URIs exist and where each one lands in the pod.
"""
