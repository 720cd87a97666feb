"""Streamed JSON/NDJSON export of message history."""

from __future__ import annotations
