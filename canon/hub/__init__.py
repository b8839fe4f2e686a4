"""Push and pull zoos through the Hugging Face Hub.

A zoo on the Hub is a repository holding ``canon-manifest.json`` (entries,
tags, metrics, families, references, schema version), the objects under
``objects/ab/<sha256>.safetensors``, cached pair results in
``canon-results.json`` and a model card ``README.md``. :func:`push` writes it
as one atomic commit; :func:`pull` merges it into a local zoo, checking
everything it reads. :func:`add_from_hub` adds the model of an ordinary model
repository (``hf://ORG/REPO``: ``config.json`` and safetensors weights), and
:func:`add_from_folder` one saved in a local folder in that form.
"""

from __future__ import annotations

from canon.hub._card import model_card as model_card
from canon.hub._from_hub import HubSource as HubSource
from canon.hub._from_hub import Provenance as Provenance
from canon.hub._from_hub import add_from_folder as add_from_folder
from canon.hub._from_hub import add_from_hub as add_from_hub
from canon.hub._from_hub import is_hub_url as is_hub_url
from canon.hub._from_hub import parse_hub_url as parse_hub_url
from canon.hub._pull import PullResult as PullResult
from canon.hub._pull import pull as pull
from canon.hub._push import PushResult as PushResult
from canon.hub._push import push as push
from canon.hub._remote import CARD_FILE as CARD_FILE
from canon.hub._remote import MANIFEST_FILE as MANIFEST_FILE
from canon.hub._remote import RESULTS_FILE as RESULTS_FILE

__all__ = [
    "CARD_FILE",
    "MANIFEST_FILE",
    "RESULTS_FILE",
    "HubSource",
    "Provenance",
    "PullResult",
    "PushResult",
    "add_from_folder",
    "add_from_hub",
    "is_hub_url",
    "model_card",
    "parse_hub_url",
    "pull",
    "push",
]
