"""The catalog: what exists, under which names and categories. `Catalog` is the interface."""

from rhinobox.catalog.base import Catalog, UploadRecord
from rhinobox.catalog.sqlite import SQLiteCatalog

__all__ = ["Catalog", "SQLiteCatalog", "UploadRecord"]
