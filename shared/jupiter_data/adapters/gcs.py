"""Cloud Storage implementation of the ``ObjectStore`` port."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import BinaryIO, cast

import google.cloud.storage as storage  # untyped: plain import keeps mypy quiet
from google.api_core import exceptions as gexc

from jupiter_data.ports import PreconditionFailed


class GcsObjectStore:
    def __init__(self, client: storage.Client) -> None:
        self._client = client

    def upload(
        self,
        bucket: str,
        name: str,
        data: bytes | BinaryIO,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> int:
        blob = self._client.bucket(bucket).blob(name)
        if metadata:
            blob.metadata = dict(metadata)
        try:
            if isinstance(data, bytes):
                blob.upload_from_string(
                    data, content_type=content_type, if_generation_match=if_generation_match
                )
            else:
                blob.upload_from_file(
                    data, content_type=content_type, if_generation_match=if_generation_match
                )
        except gexc.PreconditionFailed as exc:
            raise PreconditionFailed(f"gs://{bucket}/{name} exists at another generation") from exc
        return int(blob.generation)

    def open_read(self, bucket: str, name: str) -> BinaryIO:
        blob = self._client.bucket(bucket).blob(name)
        try:
            blob.reload()
        except gexc.NotFound as exc:
            raise FileNotFoundError(f"gs://{bucket}/{name}") from exc
        return cast(BinaryIO, blob.open("rb"))

    def list_names(self, bucket: str, prefix: str = "") -> Iterable[str]:
        return (blob.name for blob in self._client.list_blobs(bucket, prefix=prefix))
