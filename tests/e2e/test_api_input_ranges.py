"""Any integer or string in any query parameter, cursor or path id of a read: never a 5xx.

Hypothesis drives every list endpoint (and `GET /accounts/{id}?version=&as_of=`) with
integers of any size (around the int32 and int64 edges of the PostgreSQL columns), text,
and the base64 of crafted cursors (`t:<n>`, `v:<n>`, `a:<n>`). The API has no in-memory
backend: it runs on SQLite and PostgreSQL, one app per backend serving every example.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.api_support import running_services
from tests.e2e.http_support import E2E_SETTINGS, api_client, assert_problem, open_account

pytestmark = pytest.mark.asyncio(loop_scope="module")

INT4_MAX = 2**31 - 1  # PostgreSQL `integer`: versions
INT8_MAX = 2**63 - 1  # PostgreSQL `bigint`: positions, dead-letter ids
EDGES = [0, 1, -1, INT4_MAX, 2**32, INT8_MAX, 2**64, 10**18, 10**19, 10**40]
EXAMPLES = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def _near(edge: int) -> st.SearchStrategy[int]:
    return st.integers(edge - 3, edge + 3) | st.integers(-edge - 3, -edge + 3)


integers = st.one_of(
    st.integers(),
    st.sampled_from(EDGES + [-e for e in EDGES]),
    _near(INT4_MAX + 1),
    _near(INT8_MAX + 1),
)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


cursors = st.one_of(
    st.builds(lambda k, n: b64(f"{k}:{n}"), st.sampled_from("avtx"), integers),
    st.builds(lambda k, t: b64(f"{k}:{t}"), st.sampled_from("avt"), st.text(max_size=24)),
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.text(max_size=60),
)
values = st.one_of(integers.map(str), st.text(max_size=40))
times = st.one_of(
    values,
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}"),
)
paging = {"limit": values, "cursor": cursors}


@dataclass(frozen=True)
class Read:
    """A read endpoint: who calls it, its path (`{A}`: an account, `{n}`: a path id), params."""

    role: str
    method: str
    path: str
    params: dict[str, st.SearchStrategy[str]] = field(repr=False)


READS = [
    Read("customer", "GET", "/accounts", paging),
    Read("customer", "GET", "/accounts/{A}", {"version": values, "as_of": times}),
    Read("customer", "GET", "/accounts/{A}/events", paging),
    Read("customer", "GET", "/accounts/{A}/transactions", paging),
    Read("admin", "GET", "/admin/users", {"limit": values, "cursor": values}),
    Read(
        "admin",
        "GET",
        "/admin/dead-letters",
        {"status": values | st.sampled_from(["open", "all"]), "limit": values, "cursor": values},
    ),
    Read("admin", "POST", "/admin/dead-letters/{n}/retry", {}),
    Read("admin", "DELETE", "/admin/dead-letters/{n}", {}),
]


@st.composite
def requests(draw: st.DrawFn) -> tuple[Read, str, dict[str, str]]:
    read = draw(st.sampled_from(READS))
    params = draw(st.fixed_dictionaries({}, optional=read.params))
    path = read.path.replace("{n}", quote(draw(values), safe="") or "0")
    return read, path, params


@dataclass
class World:
    customer: httpx.AsyncClient
    admin: httpx.AsyncClient
    account: str

    async def send(self, read: Read, path: str, params: dict[str, str]) -> httpx.Response:
        client = self.admin if read.role == "admin" else self.customer
        return await client.request(read.method, path.replace("{A}", self.account), params=params)


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("ranges")
    if request.param == "postgres":
        url = str(request.getfixturevalue("pg_module_url"))
    else:
        url = f"sqlite:///{data_dir / 'banking.db'}"
    async with (
        running_services(data_dir, url, **E2E_SETTINGS) as services,
        api_client(services) as customer,
        api_client(services, role="admin") as admin,
    ):
        account = (await open_account(customer, "Range", "10"))["id"]
        await customer.post(f"/accounts/{account}/deposit", json={"amount": "1"})
        yield World(customer, admin, account)


def _assert_no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_problem(response, response.status_code, response.json().get("code", ""))


@EXAMPLES
@given(request=requests())
@example(request=(READS[3], READS[3].path, {"cursor": b64("t:2147483648")}))  # issue's 500
@example(request=(READS[2], READS[2].path, {"cursor": b64("v:2147483648")}))  # issue's 503
@example(request=(READS[4], READS[4].path, {"cursor": "\x00"}))
async def test_no_query_parameter_cursor_or_path_id_is_a_server_error(
    world: World, request: tuple[Read, str, dict[str, str]]
) -> None:
    read, path, params = request
    _assert_no_server_error(await world.send(read, path, params))


# ---- a number that looks right but does not fit its column is a 400 -------------------------

OUT_OF_RANGE = [
    # (read, parameter, make the value from n, the column's maximum, the 400's code)
    (READS[2], "cursor", lambda n: b64(f"v:{n}"), INT4_MAX, "invalid_cursor"),
    (READS[3], "cursor", lambda n: b64(f"t:{n}"), INT4_MAX, "invalid_cursor"),
    (READS[0], "cursor", lambda n: b64(f"a:{n}"), INT8_MAX, "invalid_cursor"),
    (READS[1], "version", str, INT4_MAX, "validation_error"),
    (READS[5], "cursor", lambda n: b64(f"d:{n}"), INT8_MAX, "invalid_cursor"),
]


@EXAMPLES
@given(
    case=st.sampled_from(OUT_OF_RANGE),
    excess=st.one_of(st.integers(1, 3), st.integers(1, 10**30)),
)
async def test_an_integer_beyond_its_column_is_a_400_problem(
    world: World, case: tuple[Read, str, Any, int, str], excess: int
) -> None:
    read, name, make, maximum, code = case
    response = await world.send(read, read.path, {name: make(maximum + excess)})
    assert_problem(response, 400, code)


@EXAMPLES
@given(case=st.sampled_from(OUT_OF_RANGE), below=st.integers(0, 3) | st.integers(0, 10**6))
async def test_an_integer_at_the_top_of_its_column_is_answered(
    world: World, case: tuple[Read, str, Any, int, str], below: int
) -> None:
    read, name, make, maximum, _code = case
    response = await world.send(read, read.path, {name: make(maximum - below)})
    if name == "version":  # beyond the account's version: API.md's 404
        assert_problem(response, 404, "not_found")
    else:
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("letter", [str(INT8_MAX + 1), str(10**30), "0", "-1"])
@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_a_dead_letter_id_outside_bigint_or_below_1_is_a_400(
    world: World, method: str, letter: str
) -> None:
    path = f"/admin/dead-letters/{letter}" + ("/retry" if method == "POST" else "")
    response = await world.admin.request(method, path)
    assert_problem(response, 400, "validation_error")
