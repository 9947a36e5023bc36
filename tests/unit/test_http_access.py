"""The one check of the HTTP paths' tokens: the viewer token as the edgeloop_token
cookie or a bearer header opens every path but the probes', which need none; the scrape
token opens /metrics and nothing else."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers

from edgeloop.web.access import Access, Gate, presented_token

VIEWER = "viewer-token-0123456789"
SCRAPE = "scrape-token-0123456789"
DEVICE = "device-token-0123456789"
GATE = Gate({VIEWER: "viewer", "operator-token-0123456789": "operator", DEVICE: "device"}, [SCRAPE])


def _headers(*pairs: tuple[str, str]) -> Headers:
    return Headers(list(pairs))


@pytest.mark.parametrize(
    "headers",
    [
        _headers(("Cookie", f"edgeloop_token={VIEWER}")),
        _headers(("Cookie", f'theme=dark; edgeloop_token="{VIEWER}"; lang=en')),
        _headers(("Cookie", "theme=dark"), ("Cookie", f"edgeloop_token={VIEWER}")),
        _headers(("Authorization", f"Bearer {VIEWER}")),
        _headers(("Authorization", f"bearer  {VIEWER} ")),
        _headers(("Authorization", "Bearer operator-token-0123456789")),
    ],
)
def test_the_token_as_a_cookie_or_a_bearer_header_opens_a_viewer_path(headers: Headers) -> None:
    assert GATE.refusal(headers, Access.VIEWER) is None
    assert GATE.refusal(headers, Access.SCRAPE) is None


def test_without_a_token_only_the_public_paths_open() -> None:
    for nothing in (_headers(), _headers(("Cookie", "edgeloop_token=")),
                    _headers(("Authorization", "Basic dXNlcjpwdw=="))):  # fmt: skip
        assert GATE.refusal(nothing, Access.PUBLIC) is None
        for access in (Access.VIEWER, Access.SCRAPE):
            refused = GATE.refusal(nothing, access)
            assert refused is not None and refused[0] == 401
            assert "edgeloop_token" in refused[1]


def test_a_wrong_token_is_forbidden_and_the_scrape_token_opens_metrics_only() -> None:
    wrong = _headers(("Cookie", "edgeloop_token=viewer-token-0123456780"))
    assert GATE.refusal(wrong, Access.VIEWER) == (403, "not a token of this appliance")
    scrape = _headers(("Authorization", f"Bearer {SCRAPE}"))
    assert GATE.refusal(scrape, Access.SCRAPE) is None
    assert GATE.refusal(scrape, Access.VIEWER) == (403, "network.metrics_token opens /metrics only")


def test_the_bearer_header_wins_over_the_cookie() -> None:
    both = _headers(("Authorization", f"Bearer {SCRAPE}"), ("Cookie", f"edgeloop_token={VIEWER}"))
    assert presented_token(both) == SCRAPE


def test_the_dashboards_api_wants_a_persons_token_and_knows_its_role() -> None:
    viewer = _headers(("Authorization", f"Bearer {VIEWER}"))
    device = _headers(("Cookie", f"edgeloop_token={DEVICE}"))
    scrape = _headers(("Authorization", f"Bearer {SCRAPE}"))
    assert GATE.refusal(viewer, Access.PERSON) is None
    assert GATE.role(viewer) == "viewer"
    assert GATE.refusal(device, Access.VIEWER) is None, "a device's token opens the trends"
    refused = GATE.refusal(device, Access.PERSON)
    assert refused is not None and refused[0] == 403 and "device" in refused[1]
    assert GATE.refusal(scrape, Access.PERSON) is not None
    assert GATE.role(_headers()) is None
