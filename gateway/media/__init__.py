"""Files: the ones people send (kept by the worker) and the ones agents answer with.

- :mod:`gateway.media.blobs` — the blob store contract and the folder store;
- :mod:`gateway.media.s3` — the blob store on an S3-compatible bucket (imported only where
  ``media.s3`` is configured: it loads botocore);
- :mod:`gateway.media.keeper` — fetching an inbound file with the platform's credentials,
  under the tenant's limits, judged on its bytes;
- :mod:`gateway.media.links` — signed, expiring links for platforms that fetch by URL;
- :mod:`gateway.media.service` — what the worker, the connectors and the agents call;
- :mod:`gateway.media.route` — ``GET /media/{blob}`` behind a signed link.
"""

from gateway.media.blobs import BlobInfo, BlobNotFound, BlobStore, BlobStoreError, FileBlobStore
from gateway.media.keeper import MediaFetch, MediaSource
from gateway.media.links import MediaLinks
from gateway.media.service import MediaService, MediaUnavailable

__all__ = [
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "FileBlobStore",
    "MediaFetch",
    "MediaLinks",
    "MediaService",
    "MediaSource",
    "MediaUnavailable",
]
