"""The zoo store: trained networks in a folder, indexed by SQLite.

``Zoo.open(path)`` gives a zoo (created and upgraded to the newest schema as
needed); entries come back as frozen :class:`Entry` records. See DESIGN §5.
Exports load on first use (PEP 562): reading the index alone imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from canon._lazy import lazy_exports

_EXPORTS = {
    "CACHE_VERSION": "canon.zoo._records",
    "KINDS": "canon.zoo._records",
    "META_ARCH": "canon.zoo._ingest",
    "declared_spec": "canon.zoo._ingest",
    "Entry": "canon.zoo._records",
    "VerifyReport": "canon.zoo._records",
    "ObjectStore": "canon.zoo._objects",
    "Comparison": "canon.zoo._analysis",
    "Table": "canon.zoo._analysis",
    "Zoo": "canon.zoo._analysis",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)

if TYPE_CHECKING:
    from canon.zoo._analysis import Comparison as Comparison
    from canon.zoo._analysis import Table as Table
    from canon.zoo._analysis import Zoo as Zoo
    from canon.zoo._ingest import META_ARCH as META_ARCH
    from canon.zoo._ingest import declared_spec as declared_spec
    from canon.zoo._objects import ObjectStore as ObjectStore
    from canon.zoo._records import CACHE_VERSION as CACHE_VERSION
    from canon.zoo._records import KINDS as KINDS
    from canon.zoo._records import Entry as Entry
    from canon.zoo._records import VerifyReport as VerifyReport
