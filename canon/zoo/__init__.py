"""The zoo store: trained networks in a folder, indexed by SQLite.

``Zoo.open(path)`` gives a zoo (created and upgraded to the newest schema as
needed); entries come back as frozen :class:`Entry` records. See DESIGN §5.
Exports load on first use (PEP 562): reading the index alone imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from canon._lazy import lazy_exports

_EXPORTS = {
    # the zoo and its records
    "Zoo": "canon.zoo._zoo",
    "Entry": "canon.zoo._records",
    "EntryFields": "canon.zoo._records",
    "PairResult": "canon.zoo._records",
    "VerifyReport": "canon.zoo._records",
    "CACHE_VERSION": "canon.zoo._records",
    "KINDS": "canon.zoo._records",
    "SELECTION_KINDS": "canon.zoo._records",
    "NAME_PATTERN": "canon.zoo._records",
    "check_name": "canon.zoo._records",
    "check_pair_result": "canon.zoo._records",
    # its parts
    "Index": "canon.zoo._index",
    "ObjectStore": "canon.zoo._objects",
    "PairCache": "canon.zoo._pair_cache",
    "JobQueue": "canon.zoo._job_queue",
    "Job": "canon.zoo._job_queue",
    "JobState": "canon.zoo._job_queue",
    "JOB_STATES": "canon.zoo._job_queue",
    "ACTIVE_STATES": "canon.zoo._job_queue",
    "MAX_ATTEMPTS": "canon.zoo._job_queue",
    "job_key": "canon.zoo._job_queue",
    "check_sha": "canon.zoo._objects",
    "sha256_file": "canon.zoo._objects",
    # comparisons, tables and midpoints
    "Comparison": "canon.zoo._analysis",
    "Table": "canon.zoo._analysis",
    "ALIGN_MODES": "canon.zoo._records",
    "EXECUTORS": "canon.zoo._records",
    "CURVE_METRICS": "canon.zoo._keys",
    "DISTANCE_METRICS": "canon.zoo._keys",
    # answers from the index and the pair cache alone (no SQLAlchemy, numpy or torch)
    "EntryDetails": "canon.zoo._answers",
    "TableData": "canon.zoo._answers",
    "cached_comparison": "canon.zoo._answers",
    "comparison_text": "canon.zoo._answers",
    "cached_table": "canon.zoo._answers",
    "entry_details": "canon.zoo._answers",
    "MIDPOINT_PATHS": "canon.zoo._midpoints",  # re-exported from canon.engine
    "check_midpoint": "canon.zoo._midpoints",
    # checkpoints coming in
    "META_ARCH": "canon.zoo._ingest",
    "declared_spec": "canon.zoo._ingest",
    "Shards": "canon.zoo._ingest",
    # the folder, the manifest and reading the index without SQLAlchemy or torch
    "INDEX": "canon.zoo._layout",
    "MANIFEST": "canon.zoo._layout",
    "OBJECTS": "canon.zoo._layout",
    "HEAD_REVISION": "canon.zoo._layout",
    "is_zoo": "canon.zoo._layout",
    "object_count": "canon.zoo._layout",
    "recorded_revision": "canon.zoo._layout",
    "list_entries": "canon.zoo._listing",
    "manifest": "canon.zoo._manifest",
    "object_path": "canon.zoo._manifest",
    "parse_manifest": "canon.zoo._manifest",
    "import_entries": "canon.zoo._manifest",
    # syncing with a remote copy: the three-way merge and what the index records
    "PREFER": "canon.zoo._merge",
    "EntryState": "canon.zoo._merge",
    "EntryUpdate": "canon.zoo._merge",
    "Merge": "canon.zoo._merge",
    "Snapshot": "canon.zoo._merge",
    "SyncRecord": "canon.zoo._merge",
    "merge": "canon.zoo._merge",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:
    from canon.zoo._analysis import Comparison as Comparison
    from canon.zoo._analysis import Table as Table
    from canon.zoo._answers import EntryDetails as EntryDetails
    from canon.zoo._answers import TableData as TableData
    from canon.zoo._answers import cached_comparison as cached_comparison
    from canon.zoo._answers import cached_table as cached_table
    from canon.zoo._answers import comparison_text as comparison_text
    from canon.zoo._answers import entry_details as entry_details
    from canon.zoo._index import Index as Index
    from canon.zoo._ingest import META_ARCH as META_ARCH
    from canon.zoo._ingest import declared_spec as declared_spec
    from canon.zoo._job_queue import ACTIVE_STATES as ACTIVE_STATES
    from canon.zoo._job_queue import JOB_STATES as JOB_STATES
    from canon.zoo._job_queue import MAX_ATTEMPTS as MAX_ATTEMPTS
    from canon.zoo._job_queue import Job as Job
    from canon.zoo._job_queue import JobQueue as JobQueue
    from canon.zoo._job_queue import JobState as JobState
    from canon.zoo._job_queue import job_key as job_key
    from canon.zoo._keys import CURVE_METRICS as CURVE_METRICS
    from canon.zoo._keys import DISTANCE_METRICS as DISTANCE_METRICS
    from canon.zoo._layout import HEAD_REVISION as HEAD_REVISION
    from canon.zoo._layout import INDEX as INDEX
    from canon.zoo._layout import MANIFEST as MANIFEST
    from canon.zoo._layout import OBJECTS as OBJECTS
    from canon.zoo._layout import is_zoo as is_zoo
    from canon.zoo._layout import object_count as object_count
    from canon.zoo._layout import recorded_revision as recorded_revision
    from canon.zoo._listing import list_entries as list_entries
    from canon.zoo._manifest import import_entries as import_entries
    from canon.zoo._manifest import manifest as manifest
    from canon.zoo._manifest import object_path as object_path
    from canon.zoo._manifest import parse_manifest as parse_manifest
    from canon.zoo._merge import PREFER as PREFER
    from canon.zoo._merge import EntryState as EntryState
    from canon.zoo._merge import EntryUpdate as EntryUpdate
    from canon.zoo._merge import Merge as Merge
    from canon.zoo._merge import Snapshot as Snapshot
    from canon.zoo._merge import SyncRecord as SyncRecord
    from canon.zoo._merge import merge as merge
    from canon.zoo._midpoints import MIDPOINT_PATHS as MIDPOINT_PATHS
    from canon.zoo._midpoints import check_midpoint as check_midpoint
    from canon.zoo._objects import ObjectStore as ObjectStore
    from canon.zoo._objects import check_sha as check_sha
    from canon.zoo._objects import sha256_file as sha256_file
    from canon.zoo._pair_cache import PairCache as PairCache
    from canon.zoo._records import CACHE_VERSION as CACHE_VERSION
    from canon.zoo._records import KINDS as KINDS
    from canon.zoo._records import NAME_PATTERN as NAME_PATTERN
    from canon.zoo._records import SELECTION_KINDS as SELECTION_KINDS
    from canon.zoo._records import Entry as Entry
    from canon.zoo._records import EntryFields as EntryFields
    from canon.zoo._records import PairResult as PairResult
    from canon.zoo._records import VerifyReport as VerifyReport
    from canon.zoo._records import check_name as check_name
    from canon.zoo._records import check_pair_result as check_pair_result
    from canon.zoo._zoo import Zoo as Zoo
