"""Request and response bodies of the REST API (JSON), as pydantic models.

Request bodies are checked for their JSON shape only (types, required keys, no unknown
key, bounded sizes): their values (names, subnets, rates, sites) are checked by the same
validation as an intent file, once the change is applied to the whole intent, so an error
names its path in the intent (``tenants[0].networks[1].subnet``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

Name = Annotated[str, Field(max_length=64, examples=["acme"])]
Text = Annotated[str, Field(max_length=128)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HostBody(_Body):
    """A tenant host to attach: ``SITE/HOST`` and, optionally, its address (else the next
    free one of the network's subnet)."""

    name: Annotated[str, Field(max_length=130, examples=["i3s/web-3"])]
    address: Annotated[str | None, Field(max_length=64, examples=["192.168.1.20"])] = None

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class NetworkBody(_Body):
    """A tenant network to create (seed 004 §III-A: the user API's network)."""

    name: Name
    subnet: Annotated[str, Field(max_length=64, examples=["10.20.0.0/24"])]
    sites: Annotated[list[Name], Field(max_length=64, examples=[["i3s"]])]
    hosts: Annotated[
        list[HostBody],
        Field(max_length=256, description='each ``"SITE/HOST"`` or ``{"name", "address"}``'),
    ] = []


class TenantBody(_Body):
    """A tenant to create: its name, its guaranteed rate (tc syntax, e.g. ``100mbit``) and
    its first networks."""

    name: Name
    rate: Annotated[str | None, Field(max_length=32, examples=["100mbit"])] = None
    networks: Annotated[list[NetworkBody], Field(max_length=64)] = []


class RateBody(_Body):
    """A tenant's new guaranteed rate; ``null`` removes it."""

    rate: Annotated[str | None, Field(max_length=32, examples=["50mbit"])]


class SiteBody(_Body):
    """A site to extend a network to."""

    site: Name


class MoveBody(_Body):
    """Where a tenant host moves: a site its network spans."""

    to_site: Name


class SiteHostBody(_Body):
    """A provider host of a site (the admin's): its name and, optionally, its address."""

    name: Name
    address: Annotated[str | None, Field(max_length=64)] = None


class PeeringBody(_Body):
    """The overlay's topology: ``full-mesh``, ``hub`` (with ``hub``: a site) or ``mst``."""

    topology: Annotated[str, Field(max_length=32, examples=["hub"])]
    hub: Annotated[str | None, Field(max_length=64)] = None


# ---------------------------------------------------------------------- responses
class Problem(BaseModel):
    """One error: where (a YAML path of the intent, or ``body.…``/``path.…``/``query.…``
    for the request itself), what, and how to fix it."""

    path: str
    message: str
    hint: str | None = None


class Problems(BaseModel):
    """A 422 answer: every problem at once."""

    detail: list[Problem]


class Message(BaseModel):
    """Any other error answer (401, 403, 404, 409, 503): what happened."""

    detail: str


class Applied(BaseModel):
    """The answer to a change: the intent version it made, the changes made to the lab
    (as ``polynimbus up -v`` lists them), their counts, and warnings.

    ``tenant`` (the created tenant, with its token), ``network`` (the network as it is
    now) or ``moved`` (what a move did) are set by the operations that have them.
    """

    version: int
    changes: list[str]
    counts: dict[str, int]
    warnings: list[str] = []
    tenant: dict[str, Any] | None = None
    network: dict[str, Any] | None = None
    moved: dict[str, Any] | None = None


class VersionInfo(BaseModel):
    """One intent version (``yaml`` only when one version is asked for)."""

    version: int
    time: str
    who: str
    yaml: str | None = None
