"""Where the shared acceptance fixtures live: ``../shared`` beside the checkout."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
CONTRACT = SHARED / "contract"
VECTORS = SHARED / "vectors"
EXAMPLES = REPO / "examples"
