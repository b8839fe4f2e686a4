"""The zoo store: trained networks in a folder, indexed by SQLite.

``Zoo.open(path)`` gives a zoo (created and upgraded to the newest schema as
needed); entries come back as frozen :class:`Entry` records. See DESIGN §5.
"""

from canon.zoo._analysis import Comparison as Comparison
from canon.zoo._analysis import Table as Table
from canon.zoo._analysis import Zoo as Zoo
from canon.zoo._objects import ObjectStore as ObjectStore
from canon.zoo._records import CACHE_VERSION as CACHE_VERSION
from canon.zoo._records import KINDS as KINDS
from canon.zoo._records import Entry as Entry
from canon.zoo._records import VerifyReport as VerifyReport

__all__ = [
    "CACHE_VERSION",
    "KINDS",
    "Comparison",
    "Entry",
    "ObjectStore",
    "Table",
    "VerifyReport",
    "Zoo",
]
