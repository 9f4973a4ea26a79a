"""Where hwnas finds the published benchmark data (read-only tables).

The data is not shipped with the package. It is read from the folder named
by the environment variable ``HWNAS_DATA`` or, when that is unset, from
``<repository>/../shared/data``. Every code path that needs a file asks
:func:`require_data_file`, which fails with one clear line when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

from hwnas.errors import DataNotFoundError

#: environment variable naming the benchmark data folder
DATA_ENV_VAR = "HWNAS_DATA"


def data_dir() -> Path:
    """The benchmark data folder: ``$HWNAS_DATA``, else ``<repository>/../shared/data``."""
    configured = os.environ.get(DATA_ENV_VAR, "").strip()
    if configured:
        return Path(configured).expanduser()
    repository = Path(__file__).resolve().parent.parent
    return repository.parent / "shared" / "data"


def require_data_file(relpath: str | os.PathLike[str]) -> Path:
    """The path of ``relpath`` inside :func:`data_dir`, or :class:`DataNotFoundError`."""
    path = data_dir() / relpath
    if not path.is_file():
        raise DataNotFoundError(
            f"benchmark data file {path} not found; set {DATA_ENV_VAR} to the folder "
            f"that holds the published data (e.g. nb201/, fbnet/)"
        )
    return path
