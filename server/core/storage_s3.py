"""The content-addressed store on the S3 API (AWS S3, Backblaze B2, any S3-compatible server).

Same interface and guarantees as :class:`server.core.storage.LocalObjectStore`:

* **Content-addressed keys**: ``<prefix>/sha256/ab/cd/abcd...``; the SHA-256 is computed while the bytes are
  read for upload, so the name is always the hash of what was sent.
* **Never overwrite**: an existing key is never written again (HEAD first, then a conditional put
  ``If-None-Match: *``; a concurrent writer of the same bytes loses with 412 and gets ``created=False``).
* **Integrity**: every request carries ``x-amz-checksum-sha256`` (the part's or object's SHA-256), which S3 and
  compatible servers check on arrival; the object's SHA-256 is also kept in its metadata (``sha256``) and its
  size compared after the upload. Reads hash the bytes and refuse an object whose hash is not its name.
* **Multipart** for objects of at least ``multipart_threshold`` bytes, in ``part_size`` parts. An interrupted
  multipart upload is invisible (S3 shows an object only once it is completed) and is *resumed* by the next put
  of the same bytes: parts already on the server whose size and SHA-256 match are reused.
  :meth:`S3ObjectStore.clean_temp` aborts incomplete uploads left behind.
* **Retries** with exponential backoff on throttling, 5xx and timeouts (botocore's ``standard`` retry mode,
  ``max_attempts`` attempts). Permission (403) and quota failures become :class:`StorageError` with the reason.

``path(key)`` hands readers a local file: a verified copy in ``cache_dir`` (downloaded to a temp file, hashed,
made read-only and renamed into place). Credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/credentials``, instance roles) and are never logged or shown.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from server.core.storage import CHUNK, ObjectTooLarge, StorageError, StoredObject, key_for, open_temp

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # the S3 API's smallest part (all but the last)
QUOTA_CODES = {"QuotaExceeded", "StorageQuotaExceeded", "ServiceQuotaExceeded", "InsufficientStorage",
               "StorageLimitExceeded", "TooManyBuckets"}
PERMISSION_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
                    "AccountProblem", "InvalidToken", "ExpiredToken", "Forbidden"}
QUOTA_WORDS = ("quota", "cap exceeded", "storage cap", "insufficient storage", "storage full")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; ValueError naming the URL otherwise."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in the storage URL {url!r}")
    return bucket, prefix.strip("/")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


@functools.lru_cache(maxsize=1)
def _session():
    """One boto3 session per process: it caches the service models (a new one costs ~1 s to load them)."""
    import boto3

    return boto3.session.Session()


def _same_part(listed: dict, chunk: bytes, checksum: str) -> bool:
    """Is a part already on the server (from ListParts) these bytes? By SHA-256 where the server reports it,
    else by the part's ETag, which S3 and compatible servers define as the MD5 of the part's bytes."""
    if listed.get("Size") != len(chunk):
        return False
    if listed.get("ChecksumSHA256"):
        return listed["ChecksumSHA256"] == checksum
    return str(listed.get("ETag", "")).strip('"') == hashlib.md5(chunk, usedforsecurity=False).hexdigest()


def make_client(endpoint_url: str | None = None, region: str | None = None, max_attempts: int = 6):
    """A boto3 S3 client with standard retries (exponential backoff with jitter); credentials from boto3's chain."""
    from botocore.config import Config

    session = _session()
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=10, read_timeout=120,
        # We send x-amz-checksum-sha256 ourselves; botocore's default CRC trailers are not understood by every
        # S3-compatible server.
        request_checksum_calculation="when_required", response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return session.client("s3", endpoint_url=endpoint_url or None,
                          region_name=region or session.region_name or "us-east-1", config=config)


class S3ObjectStore:
    """Content-addressed objects under ``s3://bucket/prefix`` with a local cache of verified copies."""

    def __init__(self, url: str, *, cache_dir: str | os.PathLike[str], endpoint_url: str | None = None,
                 region: str | None = None, multipart_threshold: int = 64 * MIB, part_size: int = 16 * MIB,
                 max_attempts: int = 6, client: Any = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.endpoint_url = endpoint_url or None
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} is below the S3 minimum of {MIN_PART_SIZE} bytes")
        if multipart_threshold < part_size:
            raise ValueError(f"multipart_threshold {multipart_threshold} is below part_size {part_size}")
        self.multipart_threshold, self.part_size = multipart_threshold, part_size
        self.root = Path(cache_dir)  # local side: verified copies, and tmp/ for spooling (as the local store)
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the store cache at {self.root}: {exc.strerror}") from None
        self.client = client if client is not None else make_client(endpoint_url, region, max_attempts)
        self.parts_uploaded = 0  # counters for tests and benchmarks (parts sent / reused when resuming)
        self.parts_reused = 0

    def __repr__(self) -> str:  # never the credentials
        where = f", endpoint={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3ObjectStore({self.url!r}{where})"

    # --- names and errors -----------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _check_key(key: str) -> str:
        parts = key.split("/") if isinstance(key, str) else []
        if len(parts) != 4 or parts[0] != "sha256" or key_for(parts[3]) != key:
            raise ValueError(f"not a storage key: {key!r}")
        return parts[3]

    def _error(self, exc: Exception, action: str, key: str | None = None) -> StorageError:
        """A botocore exception -> one StorageError that says what failed and what to do (no credentials)."""
        from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError,
                                         NoCredentialsError, PartialCredentialsError)

        where = f"{key} in {self.url}" if key else self.url
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(f"no S3 credentials for {self.url}: set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / ~/.aws/credentials")
        if isinstance(exc, BotoConnectionError):
            return StorageError(f"cannot reach the S3 endpoint {self.endpoint_url or 'of AWS'} to {action} {where} "
                                f"(gave up after retries): {type(exc).__name__}")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = str(err.get("Message", "")).strip()
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code or status}{': ' + message if message else ''}"
            if code in QUOTA_CODES or status == 507 or any(w in message.lower() for w in QUOTA_WORDS):
                return StorageError(f"the object store {self.url} is full or over its quota; cannot {action} "
                                    f"{where} ({detail})")
            if code in PERMISSION_CODES or status == 403:
                return StorageError(f"permission denied: cannot {action} {where} ({detail}); check the S3 "
                                    "credentials and the bucket's policy")
            if code == "NoSuchBucket":
                return StorageError(f"the bucket {self.bucket!r} does not exist at "
                                    f"{self.endpoint_url or 'AWS'}: create it or fix OPENASTRO_STORAGE_URL")
            return StorageError(f"cannot {action} {where}: S3 error {detail}")
        return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {exc}")

    def _call(self, action: str, key: str | None, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, action, key) from None

    @staticmethod
    def _status(exc: Exception) -> int | None:
        response = getattr(exc, "response", None) or {}
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")

    def _head(self, key: str) -> dict | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if self._status(exc) == 404:
                return None
            raise self._error(exc, "look up", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "look up", key) from None

    # --- writing --------------------------------------------------------------------------------------

    def put_stream(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredObject:
        """Spool the stream to a local temp file (hashing it), then upload under its hash."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp_path = open_temp(self.root / "tmp", prefix="put-")  # locked while we hold it (clean_temp)
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = stream.read(CHUNK)
                    if not block:
                        break
                    size += len(block)
                    if max_bytes is not None and size > max_bytes:
                        raise ObjectTooLarge(max_bytes)
                    digest.update(block)
                    out.write(block)
                out.flush()
                return self._upload(tmp_path, digest.hexdigest(), size)  # still holding the lock
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(f"the store cache at {self.root} is full (no space left on device)") from None
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise StorageError(f"cannot spool an upload in {self.root / 'tmp'}: {exc.strerror}") from None
            raise
        finally:
            tmp_path.unlink(missing_ok=True)

    def put_file(self, path: str | os.PathLike[str]) -> StoredObject:
        from server.core.storage import sha256_file

        try:
            sha, size = sha256_file(path), os.path.getsize(path)
        except FileNotFoundError:
            raise StorageError(f"no such file: {os.fspath(path)!r}") from None
        return self._upload(Path(path), sha, size)

    def put_bytes(self, data: bytes) -> StoredObject:
        return self.put_stream(io.BytesIO(data))

    def _upload(self, path: Path, sha: str, size: int) -> StoredObject:
        key = key_for(sha)
        head = self._head(key)
        if head is not None:
            self._check_stored(key, sha, size, head)
            return StoredObject(key, sha, size, created=False)
        if size >= self.multipart_threshold:
            created = self._multipart(path, key, sha, size)
        else:
            created = self._single(path, key, sha)
        self._check_stored(key, sha, size)
        return StoredObject(key, sha, size, created=created)

    def _changed(self, path: Path) -> StorageError:
        return StorageError(f"{path}: the file changed while it was being stored")

    def _single(self, path: Path, key: str, sha: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        data = path.read_bytes()
        digest = hashlib.sha256(data)
        if digest.hexdigest() != sha:
            raise self._changed(path)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data, IfNoneMatch="*",
                                   ChecksumSHA256=_b64(digest.digest()), Metadata={"sha256": sha})
        except ClientError as exc:
            if self._status(exc) in (409, 412):  # a concurrent put of the same bytes won: never overwrite
                return False
            raise self._error(exc, "upload", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "upload", key) from None
        return True

    def _incomplete_upload(self, key: str) -> tuple[str | None, dict[int, dict]]:
        """An incomplete multipart upload of this key (its id and parts by number), to resume."""
        name = self._name(key)
        listing = self._call("list uploads of", key, self.client.list_multipart_uploads,
                             Bucket=self.bucket, Prefix=name)
        uploads = sorted((u for u in listing.get("Uploads", []) if u["Key"] == name),
                         key=lambda u: u.get("Initiated", 0))
        if not uploads:
            return None, {}
        upload_id = uploads[-1]["UploadId"]
        parts: dict[int, dict] = {}
        marker = 0
        while True:
            page = self._call("list parts of", key, self.client.list_parts, Bucket=self.bucket, Key=name,
                              UploadId=upload_id, PartNumberMarker=marker)
            for p in page.get("Parts", []):
                parts[int(p["PartNumber"])] = p
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        return upload_id, parts

    def _multipart(self, path: Path, key: str, sha: str, size: int) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        name = self._name(key)
        upload_id, done = self._incomplete_upload(key)
        if upload_id is None:
            upload_id = self._call("start the upload of", key, self.client.create_multipart_upload,
                                   Bucket=self.bucket, Key=name, ChecksumAlgorithm="SHA256",
                                   Metadata={"sha256": sha})["UploadId"]
        digest = hashlib.sha256()
        parts = []
        with open(path, "rb") as fh:
            number = 1
            while True:
                chunk = fh.read(self.part_size)
                if not chunk:
                    break
                digest.update(chunk)
                checksum = _b64(hashlib.sha256(chunk).digest())
                previous = done.get(number)
                if previous is not None and _same_part(previous, chunk, checksum):
                    etag = previous["ETag"]
                    self.parts_reused += 1
                else:
                    etag = self._call("upload a part of", key, self.client.upload_part, Bucket=self.bucket,
                                      Key=name, UploadId=upload_id, PartNumber=number, Body=chunk,
                                      ChecksumSHA256=checksum, ChecksumAlgorithm="SHA256")["ETag"]
                    self.parts_uploaded += 1
                parts.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum})
                number += 1
        if digest.hexdigest() != sha:
            self._abort(name, upload_id)
            raise self._changed(path)
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except ClientError as exc:
            if self._status(exc) in (409, 412):
                self._abort(name, upload_id)
                return False
            raise self._error(exc, "complete the upload of", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "complete the upload of", key) from None
        return True

    def _abort(self, name: str, upload_id: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            pass  # clean_temp() aborts it later

    def _check_stored(self, key: str, sha: str, size: int, head: dict | None = None) -> None:
        head = head if head is not None else self._head(key)
        if head is None:
            raise StorageError(f"object {key} is not in {self.url} after its upload")
        stored_sha = (head.get("Metadata") or {}).get("sha256")
        if int(head.get("ContentLength", -1)) != size or (stored_sha is not None and stored_sha != sha):
            raise StorageError(f"object {key} in {self.url} does not match its name (size "
                               f"{head.get('ContentLength')} vs {size}): run 'openastro store check'")

    # --- reading --------------------------------------------------------------------------------------

    def path(self, key: str) -> Path:
        """A local, verified, read-only copy of the object (downloaded once into the cache)."""
        sha = self._check_key(key)
        local = self.root / key
        if local.is_file():
            return local
        fd, tmp_path = open_temp(self.root / "tmp", prefix="get-")
        try:
            with os.fdopen(fd, "wb") as out:
                got = self._download(key, out)
            if got != sha:
                raise StorageError(f"object {key} in {self.url} is corrupt: its bytes hash to {got}")
            os.chmod(tmp_path, 0o444)
            local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_path, local)
        finally:
            tmp_path.unlink(missing_ok=True)
        return local

    def _download(self, key: str, out: BinaryIO | None) -> str:
        """Stream the object into ``out`` (or nowhere); its SHA-256."""
        from botocore.exceptions import BotoCoreError, ClientError

        digest = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
            for block in iter(lambda: body.read(CHUNK), b""):
                digest.update(block)
                if out is not None:
                    out.write(block)
        except ClientError as exc:
            if self._status(exc) == 404:
                raise StorageError(f"object {key} is not in the store at {self.url}") from None
            raise self._error(exc, "download", key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "download", key) from None
        return digest.hexdigest()

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def exists(self, key: str) -> bool:
        self._check_key(key)
        return self._head(key) is not None

    def copy_to(self, key: str, dest: str | os.PathLike[str]) -> Path:
        """Copy an object out to ``dest`` atomically (temp + rename)."""
        from server.core.storage import copy_object

        return copy_object(self, key, dest)

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """A time-limited HTTP GET URL for the object: a worker without S3 credentials downloads it directly
        (and checks the SHA-256 in the key, as :meth:`path` does)."""
        self._check_key(key)
        return self._call("sign a URL for", key, self.client.generate_presigned_url, ClientMethod="get_object",
                          Params={"Bucket": self.bucket, "Key": self._name(key)}, ExpiresIn=int(expires_s))

    def keys(self) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        strip = len(self._name(""))
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._name("sha256/")):
                for item in page.get("Contents", []):
                    key = item["Key"][strip:]
                    sha = key.rsplit("/", 1)[-1]
                    if len(sha) == 64 and all(c in "0123456789abcdef" for c in sha) and key == key_for(sha):
                        yield key
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", None) from None

    def verify(self, key: str) -> bool:
        """True when the object's bytes on the server still hash to its name (reads the whole object)."""
        sha = self._check_key(key)
        ok = self._download(key, None) == sha
        if not ok:
            (self.root / key).unlink(missing_ok=True)  # never hand out a cached copy of a bad object
        return ok

    def delete(self, key: str) -> bool:
        """Remove the object (and its cached copy); True when it existed."""
        self._check_key(key)
        existed = self._head(key) is not None
        if existed:
            self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._name(key))
        cached = self.root / key
        if cached.exists():
            cached.unlink()
        return existed

    def clean_temp(self, grace_s: float = 0.0) -> int:
        """Remove local spool and download files left by crashed processes (held by no live process, older than
        ``grace_s``). Incomplete multipart uploads are left alone: another worker may be sending one right now,
        and a later put of the same bytes resumes them; :meth:`abort_incomplete_uploads` removes them."""
        from server.core.storage import remove_stale_temp

        return remove_stale_temp(self.root / "tmp", grace_s, prefixes=("put-", "get-"))

    def abort_incomplete_uploads(self) -> int:
        """Abort every incomplete multipart upload under this store's prefix (``openastro store check --repair``;
        run it while nothing is uploading). Returns how many were aborted."""
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in self._call("list uploads of", None, lambda: list(
                paginator.paginate(Bucket=self.bucket, Prefix=self._name("sha256/")))):
            for upload in page.get("Uploads", []):
                self._abort(upload["Key"], upload["UploadId"])
                aborted += 1
        return aborted


def open_s3_store(settings) -> S3ObjectStore:
    """The S3 store the settings describe (``storage_url`` and the ``s3_*`` settings)."""
    return S3ObjectStore(settings.storage_url, cache_dir=settings.resolved_storage_cache_dir,
                         endpoint_url=settings.s3_endpoint_url or None, region=settings.s3_region or None,
                         multipart_threshold=settings.s3_multipart_threshold, part_size=settings.s3_part_size,
                         max_attempts=settings.s3_max_attempts)
