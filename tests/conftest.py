"""Shared fixtures. Real binaries and the real pinned CRDs (../shared/crds): nothing here is mocked away."""

from __future__ import annotations

from pathlib import Path

import pytest

from servingops import schemas
from servingops.tools import PROJECT_ROOT


@pytest.fixture(scope="session")
def store() -> schemas.Store:
    """The schema store every validation test uses (built once; rebuilt only when its inputs change)."""
    return schemas.build_store(PROJECT_ROOT / ".cache" / "schemas")


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
