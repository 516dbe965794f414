"""Bringing existing spend in: one reader per source format, all producing `SourceRecord`s for `Importer`."""

from datetime import tzinfo
from pathlib import Path

from budget_mcp.errors import InvalidInputError
from budget_mcp.importers.apollo import ApolloSource
from budget_mcp.importers.csv_rows import CsvSource
from budget_mcp.importers.hal0 import Hal0Source
from budget_mcp.importers.litellm import LiteLLMSource
from budget_mcp.importers.record import Invalid, Source, SourceBudget, SourceRecord
from budget_mcp.importers.rhetor import RhetorSource
from budget_mcp.importers.run import Importer, ImportSummary, entry_id
from budget_mcp.importers.tekton import TektonSource

FORMATS = ("hal0", "tekton", "rhetor", "apollo", "litellm", "csv")


def open_source(format_name: str, path: Path, *, naive_zone: tzinfo, budget: str | None = None) -> Source:
    """The reader of `format_name` on `path` (a file, or Apollo's folder)."""
    if format_name == "apollo":
        return ApolloSource(path, naive_zone)
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file; pass the {format_name} file to import")
    if format_name == "hal0":
        return Hal0Source(path, naive_zone)
    if format_name == "tekton":
        return TektonSource(path, naive_zone)
    if format_name == "rhetor":
        return RhetorSource(path, naive_zone)
    if format_name == "litellm":
        return LiteLLMSource(path, naive_zone)
    if format_name == "csv":
        return CsvSource(path, naive_zone, budget)
    raise InvalidInputError(f"unknown format {format_name!r}; use one of {', '.join(FORMATS)}")


__all__ = [
    "FORMATS", "ImportSummary", "Importer", "Invalid", "Source", "SourceBudget", "SourceRecord", "entry_id",
    "open_source",
]  # fmt: skip
