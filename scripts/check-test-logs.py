#!/usr/bin/env python3
"""Fail when a gateway log written by the integration tests shows a key.

The tests run every gateway at trace level and keep its log under
target/test-logs/. A key would show up as a 64-character hex string (the
form generated keys take) or as an x-api-key value: standard base64 that
decodes to printable `clientId:key`. Only the file, line and kind of each
finding are printed, never the text, so the check itself leaks nothing.

Usage: scripts/check-test-logs.py [LOG_DIR]   (default target/test-logs)
"""

import base64
import binascii
import pathlib
import re
import sys

HEX_KEY = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
BASE64_TOKEN = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{12,}={0,2}(?![A-Za-z0-9+/=])")


def looks_like_api_key(token: str) -> bool:
    """Returns whether `token` decodes to printable `clientId:key`."""
    padded = token + "=" * (-len(token) % 4)
    try:
        text = base64.b64decode(padded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    client_id, separator, key = text.partition(":")
    return bool(separator and client_id and key and text.isprintable()) and not any(
        character.isspace() for character in client_id
    )


def findings(line: str) -> set:
    kinds = set()
    if HEX_KEY.search(line):
        kinds.add("64-hex key")
    if any(looks_like_api_key(token) for token in BASE64_TOKEN.findall(line)):
        kinds.add("x-api-key value")
    return kinds


def main() -> int:
    log_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/test-logs")
    logs = sorted(log_dir.glob("*.log"))
    if not logs:
        print(f"check-test-logs: no logs in {log_dir}; run the integration tests first")
        return 1
    count = 0
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            kinds = findings(line)
            if kinds:
                count += 1
                print(f"check-test-logs: {path}:{number}: looks like a {' and '.join(sorted(kinds))}")
    print(f"check-test-logs: {len(logs)} gateway logs read, {count} lines with key-shaped text")
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
