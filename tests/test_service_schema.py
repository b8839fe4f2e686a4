"""Property-based requests from the service's own OpenAPI schema (schemathesis).

No generated request, valid or not, gets a 5xx; and every response has a
status code, content type and body that the schema documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from servers import TOKEN, Server, start_server

import canon
from canon.zoo import Zoo

EXAMPLES_PER_OPERATION = 8  # per generation mode: about 250 requests in all
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def tiny_zoo(root: Path) -> Path:
    """A zoo of two small MLPs on digits, so that any job the fuzzer starts is quick."""
    config = {"in_features": 64, "hidden": [8], "classes": 10}
    with Zoo.open(root) as zoo:
        for seed in (0, 1):
            torch.manual_seed(seed)
            state = canon.build_model("mlp", config).state_dict()
            zoo.add(state, name=f"tiny-{seed}", architecture="mlp", config=config, dataset="digits")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the token on a zoo of two small networks."""
    root = tmp_path_factory.mktemp("schema")
    running = start_server(tiny_zoo(root / "zoo"), root / "server.log")
    yield running
    running.stop()


@pytest.mark.slow  # about 250 generated requests to a real server process
def test_no_server_errors_for_any_generated_request(server: Server) -> None:
    """Valid and invalid requests to every operation (with the token): no 5xx, as documented."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:  # nothing in the operation can be made invalid
                pass
            except (Exception, BaseExceptionGroup) as exc:  # collect every failure, not the first
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    assert server.get("/api/info").status_code == 200
