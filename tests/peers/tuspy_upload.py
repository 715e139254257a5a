"""Upload one file with tuspy (PyPI ``tuspy``), resuming through its own URL storage.

    python tuspy_upload.py --endpoint URL --file PATH --store STORAGE.json
        [--chunk-size BYTES] [--pause-after BYTES]

One JSON object per line on stdout: {"event": "start"|"chunk"|"paused"|"done"}. A second run with
the same --store finds the upload by tuspy's fingerprint and continues from the server's offset.
--pause-after stops once that many bytes are acknowledged and waits to be killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tusclient import client
from tusclient.storage.filestorage import FileStorage


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--chunk-size", type=int, default=1 << 20)
    parser.add_argument("--pause-after", type=int)
    args = parser.parse_args()
    uploader = client.TusClient(args.endpoint).uploader(
        file_path=args.file,
        chunk_size=args.chunk_size,
        store_url=True,
        url_storage=FileStorage(args.store),
        metadata={"filename": args.file.rsplit("/", 1)[-1]},
    )
    emit(event="start", url=uploader.url, offset=uploader.offset)  # url None: a new upload
    while uploader.offset < uploader.get_file_size():
        uploader.upload_chunk()
        emit(event="chunk", url=uploader.url, accepted=uploader.offset)
        if args.pause_after is not None and uploader.offset >= args.pause_after:
            emit(event="paused", accepted=uploader.offset)
            time.sleep(3600)  # wait to be killed
    emit(event="done", url=uploader.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
