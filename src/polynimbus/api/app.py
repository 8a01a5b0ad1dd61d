"""The controller's REST API (seed 004 §III-A "Application interactions": an admin API and
a user API), a FastAPI application over one lab.

Auth: ``Authorization: Bearer TOKEN``. The admin token (``admin.token`` in the lab's
state directory) opens everything; a tenant's token opens ``/v1/tenants/{its name}/...``
only. No token, or a token nobody has: 401 with ``WWW-Authenticate: Bearer``. A tenant
token on ``/v1/admin/...``: 403. A tenant token on another tenant's path: 404, the same
answer as for a tenant that does not exist, so existence does not leak.

Every write builds the new intent document, validates it exactly like an intent file
(:func:`polynimbus.intent.load_intent_text`: 422 with every problem and its YAML path),
applies it to the lab through the one apply engine and answers with the changes made and
the new intent version. Writes are serialised; reads re-read the lab's saved intent each
time (a ``snapshot restore`` or an ``up`` may change it while the API runs). A write never
changes a running host's address or MAC: attaching or detaching a host first writes the
current address of every host of its network explicitly (``address:``).

Error answers: 422 ``{"detail": [{"path", "message", "hint"}, ...]}`` (an invalid intent
or request); 401/403/404/409/503 ``{"detail": "..."}``. 409: the lab is not up, or another
command holds its lock, or the change conflicts with what exists; 503: the lab could not
be changed (the message says why; the change is kept in the lab's intent, so the same
request again is a 409/422: ``polynimbus up`` with ``polynimbus export``'s output
completes it, a later write applies only what it changes itself). A tenant's 422
shows the problems about its own objects, and one generic problem for any other (other
tenants' names and rates do not leak); its write answers list the changes on its own
nodes only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from polynimbus import __version__, names, state
from polynimbus.api.applier import Applier
from polynimbus.api.models import (
    Applied,
    HostBody,
    Message,
    MoveBody,
    NetworkBody,
    PeeringBody,
    Problems,
    RateBody,
    SiteBody,
    SiteHostBody,
    TenantBody,
    VersionInfo,
)
from polynimbus.api.store import Store, read_admin_token
from polynimbus.apply import Change
from polynimbus.errors import IntentError, LabNotFoundError, PlanError, PolynimbusError, StateError
from polynimbus.intent.load import format_path, load_intent_text
from polynimbus.intent.models import Intent
from polynimbus.move import MoveError, move_host, moved_intent
from polynimbus.numbering import tenant_id
from polynimbus.plan import Plan, build_plan

log = logging.getLogger("polynimbus.api")

ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the admin (``tenant`` is ``None``) or one tenant."""

    tenant: str | None

    @property
    def who(self) -> str:
        """How versions record the caller: ``admin`` or ``tenant NAME``."""
        return ADMIN if self.tenant is None else f"tenant {self.tenant}"


class Controller:
    """The API's state: the lab (through its applier), the store and the write lock.

    Args:
        applier: where changes go (the lab, or the fake target in tests).
        store: versions and tenant tokens.
        admin_token_file: the admin token's file (re-read at each request: replacing the
            file rotates the token without a restart).
    """

    def __init__(self, applier: Applier, store: Store, admin_token_file: Path) -> None:
        self.applier = applier
        self.store = store
        self.admin_token_file = admin_token_file
        self.write_lock = threading.Lock()

    # ---------------------------------------------------------------- reading
    def current(self) -> Intent:
        """The lab's intent as it is now (its state directory's ``intent.yaml``).

        Raises:
            HTTPException: 409 when the lab has no saved intent (it is down) or it is invalid.
        """
        text = state.saved_intent(self.applier.state_dir)
        if text is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"the lab has no intent in {self.applier.state_dir}: it is not up "
                "(run polynimbus up FILE, or restart polynimbus serve FILE)",
            )
        try:
            intent = load_intent_text(text, "intent.yaml")
        except IntentError as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"the lab's saved intent is invalid ({exc.problems[0].render()})",
            ) from None
        return intent

    def plan(self, intent: Intent) -> Plan:
        """The plan of the lab's current intent (it was applied, so it plans).

        Raises:
            HTTPException: 409 if it does not plan after all.
        """
        try:
            return build_plan(intent)
        except PlanError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, exc.message) from None

    # ---------------------------------------------------------------- auth
    def authenticate(self, token: str | None) -> Caller:
        """The caller whose bearer token is ``token``.

        Raises:
            HTTPException: 401 (with ``WWW-Authenticate: Bearer``) for no or an unknown token.
        """
        import secrets

        if token:
            try:
                admin = read_admin_token(self.admin_token_file)
            except OSError:
                admin = ""
            if admin and secrets.compare_digest(admin.encode(), token.encode()):
                return Caller(None)
            tenant = self.store.tenant_of(token)
            if tenant is not None and self._tenant_exists(tenant):
                return Caller(tenant)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or unknown bearer token (send Authorization: Bearer TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _tenant_exists(self, tenant: str) -> bool:
        """Whether the lab's intent has ``tenant`` (a token outlives its tenant when a
        ``snapshot restore`` removes it, and works again if it comes back). When the
        intent cannot be read, the request goes on to answer why (409)."""
        try:
            return tenant in {t.name for t in self.current().tenants}
        except HTTPException:
            return True

    # ---------------------------------------------------------------- writing
    def write(
        self,
        caller: Caller,
        what: str,
        change: Callable[[dict[str, Any]], None],
        after: Callable[[Intent], dict[str, Any]] | None = None,
        network: str | None = None,
        pin: tuple[str, str] | None = None,
    ) -> Applied:
        """Apply ``change`` (which edits the intent document in place) to the lab.

        Validates the new document like an intent file, applies it with the applier,
        records the new version and returns what was done. ``after`` may add fields to
        the answer, from the new intent. ``network`` names the caller's network the
        change is about (where a tenant's 422 about other tenants points). ``pin``
        (``(tenant, network)``) is a network whose host list ``change`` edits: before
        the change, each of its hosts gets the address it has now written explicitly
        (:func:`pin_addresses`), so that no running host is renumbered (nor given
        another MAC, which is hashed from the address).

        Raises:
            HTTPException: 404/409 raised by ``change``; 422 for an invalid new intent (all
                problems, with their YAML paths) or one that cannot be planned; 409 when
                another command holds the lab; 503 when the lab could not be changed.
        """
        with self.write_lock:
            intent = self.current()
            self.note("found in the lab")
            doc = _dump_intent(intent)
            if pin is not None:
                pin_addresses(doc, self.plan(intent), *pin)
            change(doc)
            new = self.checked(caller, doc, network)
            return self.commit(caller, what, new, after)

    def checked(self, caller: Caller, doc: dict[str, Any], network: str | None = None) -> Intent:
        """``doc`` loaded and planned like an intent file.

        Raises:
            HTTPException: 422 with every problem (for a tenant, only those about its own
                objects: see :meth:`problems`).
        """
        try:
            new = load_intent_text(_dump(doc), "api")
            build_plan(new)
        except IntentError as exc:
            raise self.invalid(caller, doc, _problem_dicts(exc), network) from None
        except PlanError as exc:
            problem = {"path": "", "message": exc.message, "hint": exc.hint}
            raise self.invalid(caller, doc, [problem], network) from None
        return new

    def invalid(
        self,
        caller: Caller,
        doc: dict[str, Any],
        problems: list[dict[str, Any]],
        network: str | None = None,
    ) -> HTTPException:
        """The 422 answer for ``problems`` of the intent document ``doc``, as ``caller``
        may see them (see :func:`tenant_problems`)."""
        if caller.tenant is not None:
            problems = tenant_problems(doc, caller.tenant, problems, network)
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems)

    def commit(
        self,
        caller: Caller,
        what: str,
        new: Intent,
        after: Callable[[Intent], dict[str, Any]] | None = None,
    ) -> Applied:
        """Apply the checked intent ``new`` and record it (the write lock is held).

        Raises:
            HTTPException: 409 when another command holds the lab; 503 when the lab could
                not be changed.
        """
        try:
            result = self.applier.apply(new)
        except (StateError, LabNotFoundError) as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, _with_hint(exc)) from None
        except PolynimbusError as exc:
            self._note(caller, what + " (failed)")
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, _with_hint(exc)) from None
        version = self._note(caller, what)
        self.store.ensure_tokens([t.name for t in new.tenants])
        extra = after(new) if after else {}
        return self.answer(caller, what, version, new, result.changes, result.warnings, extra)

    def answer(
        self,
        caller: Caller,
        what: str,
        version: int,
        new: Intent,
        changes: list[Change],
        warnings: list[str],
        extra: dict[str, Any],
    ) -> Applied:
        """The answer to a write: for a tenant, only the changes on its own nodes."""
        counts = _counts(changes)
        log.info(
            "%s: %s: %d created, %d updated, %d deleted (version %d)",
            caller.who,
            what,
            counts["create"],
            counts["update"],
            counts["delete"],
            version,
        )
        if caller.tenant is not None:
            changes = own_changes(new, caller.tenant, changes)
        return Applied(
            version=version,
            changes=[c.describe() for c in changes],
            counts=_counts(changes),
            warnings=list(warnings),
            **extra,
        )

    def _note(self, caller: Caller | None, what: str) -> int:
        return self.note(f"{caller.who}: {what}" if caller else what)

    def note(self, who: str) -> int:
        """The latest version's number, after recording the lab's saved intent as a new
        version by ``who`` if it means something else than the latest version (comments
        and layout do not count)."""
        text = state.saved_intent(self.applier.state_dir) or ""
        latest = self.store.latest()
        if latest is not None and same_intent(latest.yaml, text):
            return latest.version
        return self.store.add_version(text, who)


def same_intent(a: str, b: str) -> bool:
    """Whether two intent texts are equal, or load to equal intents."""
    if a == b:
        return True
    try:
        return load_intent_text(a, "a") == load_intent_text(b, "b")
    except IntentError:
        return False


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _problem_dicts(exc: IntentError) -> list[dict[str, Any]]:
    return [{"path": p.path, "message": p.message, "hint": p.hint} for p in exc.problems]


def _counts(changes: list[Change]) -> dict[str, int]:
    out = {"create": 0, "update": 0, "delete": 0}
    for c in changes:
        out[c.action] += 1
    return out


GENERIC_MESSAGE = "this change conflicts with the lab's configuration"
GENERIC_HINT = "ask the lab's administrator"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def tenant_problems(
    doc: dict[str, Any], tenant: str, problems: list[dict[str, Any]], network: str | None = None
) -> list[dict[str, Any]]:
    """``problems`` of the intent document ``doc`` as tenant ``tenant`` may see them.

    A problem is shown as it is only when it is under the tenant's own ``tenants[i]`` and
    the same problem (path, message and hint) is found in the intent made of the lab and
    that tenant alone: then it can say nothing of another tenant. Every other problem
    (a VNI or id collision with another tenant, rates that add up above a site's underlay
    rate with another tenant's, a problem of the lab's) is replaced by one generic problem
    at the tenant's object (``tenants[i].networks[j]`` for ``network``, else
    ``tenants[i]``), so that neither the other tenants' existence, names nor rates leak.
    """
    tenants = doc.get("tenants") or []
    i = next((k for k, t in enumerate(tenants) if t.get("name") == tenant), None)
    if i is None:
        return [{"path": "tenants", "message": GENERIC_MESSAGE, "hint": GENERIC_HINT}]
    own_path = f"tenants[{i}]"
    focus = own_path
    nets = tenants[i].get("networks") or []
    j = next((k for k, n in enumerate(nets) if n.get("name") == network), None)
    if network is not None and j is not None:
        focus = f"{own_path}.networks[{j}]"
    alone = dict(doc, tenants=[tenants[i]])
    try:
        found = []
        build_plan(load_intent_text(_dump(alone), "api"))
    except IntentError as exc:
        found = _problem_dicts(exc)
    except PlanError as exc:
        found = [{"path": "", "message": exc.message, "hint": exc.hint}]

    def mapped(text: str | None) -> str | None:
        return None if text is None else text.replace("tenants[0]", own_path)

    own = {
        (mapped(p["path"]), mapped(p["message"]), mapped(p["hint"]))
        for p in found
        if _under(p["path"], "tenants[0]")
    }
    shown = [
        p
        for p in problems
        if _under(p["path"], own_path) and (p["path"], p["message"], p["hint"]) in own
    ]
    if len(shown) < len(problems):
        shown.append({"path": focus, "message": GENERIC_MESSAGE, "hint": GENERIC_HINT})
    return shown


def own_changes(intent: Intent, tenant: str, changes: list[Change]) -> list[Change]:
    """The changes on ``tenant``'s own nodes: its routers and hosts (namespaces
    ``pn.LAB.SITE.TENANT.*``, :func:`polynimbus.names.tenant_router_ns` and
    :func:`~polynimbus.names.tenant_host_ns`) on any site of the lab."""
    prefixes = tuple(names.tenant_host_ns(intent.name, s.name, tenant, "") for s in intent.sites)
    return [c for c in changes if c.resource.node.startswith(prefixes)]


def _with_hint(exc: PolynimbusError) -> str:
    return exc.message + (f" (hint: {exc.hint})" if exc.hint else "")


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, what)


# -------------------------------------------------------------------- documents
def _tenant_index(doc: dict[str, Any], name: str) -> int:
    for i, t in enumerate(doc.get("tenants", [])):
        if t["name"] == name:
            return i
    raise _not_found(f"no tenant {name!r}")


def _network_index(tenant: dict[str, Any], name: str) -> int:
    for i, n in enumerate(tenant.get("networks", [])):
        if n["name"] == name:
            return i
    raise _not_found(f"no network {name!r} in tenant {tenant['name']!r}")


def _host_index(network: dict[str, Any], key: str) -> int:
    for i, h in enumerate(network.get("hosts", [])):
        if h["name"] == key:
            return i
    raise _not_found(f"no host {key!r} in network {network['name']!r}")


def pin_addresses(doc: dict[str, Any], plan: Plan, tenant: str, network: str) -> None:
    """Write ``address:`` for every host of ``tenant``/``network`` in the intent document
    ``doc``: the address ``plan`` (the plan of ``doc`` as it is) gives it.

    Hosts without ``address:`` take .1, .2, ... in list order and a host's MAC is hashed
    from its address, so removing (or inserting) a host would renumber the others: once
    pinned, they keep their addresses and MACs whatever the change does to the list. No
    such tenant or network: nothing to pin (the change answers 404).
    """
    tenants = doc.get("tenants") or []
    t = next((t for t in tenants if t.get("name") == tenant), None)
    n = next((n for n in (t or {}).get("networks") or [] if n.get("name") == network), None)
    if n is None:
        return
    try:
        planned = next(p for p in plan.tenant(tenant).networks if p.name == network)
    except (KeyError, StopIteration):
        return
    addresses = {h.key: h.address for h in planned.hosts}
    hosts = n.get("hosts") or []
    for i, h in enumerate(hosts):
        entry = {"name": h} if isinstance(h, str) else h
        if entry.get("name") in addresses:
            hosts[i] = {**entry, "address": addresses[entry["name"]]}


def _site_index(doc: dict[str, Any], name: str) -> int:
    for i, s in enumerate(doc["sites"]):
        if s["name"] == name:
            return i
    raise _not_found(f"no site {name!r}")


def _host_doc(h: HostBody) -> dict[str, Any]:
    return {"name": h.name} | ({"address": h.address} if h.address is not None else {})


def _network_doc(n: NetworkBody) -> dict[str, Any]:
    return {
        "name": n.name,
        "subnet": n.subnet,
        "sites": list(n.sites),
        "hosts": [_host_doc(h) for h in n.hosts],
    }


def tenant_view(plan: Plan, intent: Intent, name: str, token: str | None = None) -> dict[str, Any]:
    """A tenant as the API shows it: ``name``, ``rate`` (as written), its plan (``id``,
    ``rate_bps``, ``transit_vni``, ``sites``, ``mtu``, ``networks`` as in ``plan --json``)
    and, for the admin, ``token``."""
    from polynimbus.plan.tenants import tenants_to_dict

    spec = next(t for t in intent.tenants if t.name == name)
    planned = next(t for t in plan.tenants if t.name == name)
    view = tenants_to_dict((planned,), plan.tenant_mtu)[0]
    view["rate"] = spec.rate
    if token is not None:
        view["token"] = token
    return view


def network_view(plan: Plan, intent: Intent, tenant: str, network: str) -> dict[str, Any]:
    """One network of ``tenant`` as in ``plan --json`` (``name``, ``subnet``, ``vni``,
    ``sites``, ``layer2``, ``router``, ``hosts`` with ``site``, ``name``, ``address`` and
    ``mac``)."""
    for n in tenant_view(plan, intent, tenant)["networks"]:
        if n["name"] == network:
            return dict(n)
    raise _not_found(f"no network {network!r} in tenant {tenant!r}")


# -------------------------------------------------------------------- the application
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "no bearer token, or an unknown one"},
    404: {"model": Message, "description": "no such object (or another tenant's)"},
    409: {"model": Message, "description": "the lab is down or busy, or a conflict"},
    422: {"model": Problems, "description": "invalid request or intent, every problem"},
    503: {"model": Message, "description": "the lab could not be changed"},
}
_ADMIN_ERRORS = _ERRORS | {
    403: {"model": Message, "description": "a tenant's token on an admin endpoint"}
}


_bearer = HTTPBearer(auto_error=False, description="The admin token, or a tenant's.")


def _caller(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    controller: Controller = request.app.state.controller
    return controller.authenticate(creds.credentials if creds else None)


def _admin(who: Annotated[Caller, Depends(_caller)]) -> Caller:
    if who.tenant is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "this endpoint needs the admin token, not a tenant's"
        )
    return who


def _tenant_scope(tenant: str, who: Annotated[Caller, Depends(_caller)]) -> Caller:
    """The admin, or the tenant the path names; anyone else gets the 404 of a tenant that
    does not exist."""
    if who.tenant is not None and who.tenant != tenant:
        raise _not_found(f"no tenant {tenant!r}")
    return who


Admin = Annotated[Caller, Depends(_admin)]
Scoped = Annotated[Caller, Depends(_tenant_scope)]


def create_app(controller: Controller) -> FastAPI:
    """The FastAPI application over ``controller`` (OpenAPI at ``/openapi.json``,
    interactive documentation at ``/docs``)."""
    app = FastAPI(
        title="polynimbus",
        version=__version__,
        summary="The controller's REST API: admin (tenants, sites, peering) and tenant "
        "(networks, hosts) APIs over one lab.",
        description=(__doc__ or "").split("\n\n", 1)[1],
    )
    app.state.controller = controller

    @app.exception_handler(RequestValidationError)
    def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            loc = tuple(p for p in e.get("loc", ()) if isinstance(p, str | int))
            problems.append(
                {
                    "path": format_path(loc),
                    "message": str(e.get("msg", "invalid")),
                    "hint": _request_hint(e),
                }
            )
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the server's log"},
            status_code=500,
        )

    adm = APIRouter(prefix="/v1/admin", tags=["admin"], responses=_ADMIN_ERRORS)
    ten = APIRouter(prefix="/v1/tenants", tags=["tenant"], responses=_ERRORS)

    # ------------------------------------------------------------ admin: tenants
    @adm.get("/tenants", summary="List tenants with their rates and tokens")
    def list_tenants(who: Admin) -> list[dict[str, Any]]:
        """Every tenant: name, rate, plan (networks, addresses, MACs) and token."""
        intent = controller.current()
        plan = controller.plan(intent)
        tokens = controller.store.tokens()
        return [tenant_view(plan, intent, t.name, tokens.get(t.name, "")) for t in intent.tenants]

    @adm.post(
        "/tenants", status_code=status.HTTP_201_CREATED, summary="Create a tenant (and its token)"
    )
    def create_tenant(body: TenantBody, who: Admin) -> Applied:
        """Add a tenant with its rate and networks; the answer's ``tenant`` holds its token.
        A name already taken is a 422 on ``tenants[N].name``. When the id hashed from the
        name is another tenant's, the new tenant gets an explicit ``id:``, the smallest
        free one."""
        doc_tenant: dict[str, Any] = {"name": body.name}
        if body.rate is not None:
            doc_tenant["rate"] = body.rate
        doc_tenant["networks"] = [_network_doc(n) for n in body.networks]

        def change(doc: dict[str, Any]) -> None:
            tenants = doc.setdefault("tenants", [])
            taken = {t.get("id") or tenant_id(t["name"]) for t in tenants}
            if tenant_id(body.name) in taken:
                # ids are hashed from names and may collide: the smallest free one
                doc_tenant["id"] = next(i for i in range(1, 0x8000) if i not in taken)
            tenants.append(doc_tenant)

        def after(new: Intent) -> dict[str, Any]:
            token = controller.store.tokens().get(body.name, "")
            return {"tenant": tenant_view(build_plan(new), new, body.name, token)}

        return controller.write(who, f"create tenant {body.name}", change, after)

    @adm.get("/tenants/{tenant}", summary="Read a tenant (with its token)")
    def read_tenant(tenant: str, who: Admin) -> dict[str, Any]:
        intent = controller.current()
        if tenant not in {t.name for t in intent.tenants}:
            raise _not_found(f"no tenant {tenant!r}")
        token = controller.store.tokens().get(tenant, "")
        return tenant_view(controller.plan(intent), intent, tenant, token)

    @adm.patch("/tenants/{tenant}", summary="Change a tenant's rate")
    def change_rate(tenant: str, body: RateBody, who: Admin) -> Applied:
        """Set the tenant's guaranteed rate (``null``: none). Checked like the intent: the
        sites' underlay rates must leave room for it."""

        def change(doc: dict[str, Any]) -> None:
            t = doc["tenants"][_tenant_index(doc, tenant)]
            t.pop("rate", None)
            if body.rate is not None:
                t["rate"] = body.rate

        return controller.write(who, f"rate of tenant {tenant}: {body.rate}", change)

    @adm.delete("/tenants/{tenant}", summary="Delete a tenant, its networks and its token")
    def delete_tenant(tenant: str, who: Admin) -> Applied:
        def change(doc: dict[str, Any]) -> None:
            del doc["tenants"][_tenant_index(doc, tenant)]

        answer = controller.write(who, f"delete tenant {tenant}", change)
        controller.store.drop_token(tenant)
        return answer

    # ------------------------------------------------------------ admin: sites
    @adm.get("/sites", summary="List sites")
    def list_sites(who: Admin) -> list[dict[str, Any]]:
        """Every site as in ``plan --json``: block, gateway, peers, routes, hosts, underlay."""
        return list(controller.plan(controller.current()).to_dict()["sites"])

    @adm.get("/sites/{site}", summary="Read a site")
    def read_site(site: str, who: Admin) -> dict[str, Any]:
        for s in controller.plan(controller.current()).to_dict()["sites"]:
            if s["name"] == site:
                return dict(s)
        raise _not_found(f"no site {site!r}")

    @adm.post(
        "/sites/{site}/hosts",
        status_code=status.HTTP_201_CREATED,
        summary="Add a provider host to a site",
    )
    def add_site_host(site: str, body: SiteHostBody, who: Admin) -> Applied:
        def change(doc: dict[str, Any]) -> None:
            s = doc["sites"][_site_index(doc, site)]
            host = {"name": body.name} | ({"address": body.address} if body.address else {})
            s.setdefault("hosts", []).append(host)

        return controller.write(who, f"add host {site}/{body.name}", change)

    @adm.delete("/sites/{site}/hosts/{host}", summary="Remove a provider host from a site")
    def remove_site_host(site: str, host: str, who: Admin) -> Applied:
        def change(doc: dict[str, Any]) -> None:
            s = doc["sites"][_site_index(doc, site)]
            hosts = s.get("hosts", [])
            for i, h in enumerate(hosts):
                if h["name"] == host:
                    del hosts[i]
                    return
            raise _not_found(f"no host {host!r} on site {site!r}")

        return controller.write(who, f"remove host {site}/{host}", change)

    # ------------------------------------------------------------ admin: peering
    @adm.get("/peering", summary="The peering: topology, hub and tunnels")
    def read_peering(who: Admin) -> dict[str, Any]:
        """``topology``, ``hub``, ``transport`` and the planned ``tunnels`` (``a``, ``b``,
        ``distance_km``, ``vni``)."""
        d = controller.plan(controller.current()).to_dict()
        ov = d["overlay"]
        return {
            "topology": ov["topology"],
            "hub": ov["hub"],
            "transport": ov["transport"],
            "tunnels": d["tunnels"],
        }

    @adm.put("/peering", summary="Change the topology (and hub)")
    def change_peering(body: PeeringBody, who: Admin) -> Applied:
        def change(doc: dict[str, Any]) -> None:
            ov = doc.setdefault("overlay", {})
            ov["topology"] = body.topology
            ov.pop("hub", None)
            if body.hub is not None:
                ov["hub"] = body.hub

        return controller.write(who, f"topology {body.topology}", change)

    # ------------------------------------------------------------ admin: versions
    @adm.get("/versions", summary="Intent versions, oldest first")
    def list_versions(who: Admin) -> list[VersionInfo]:
        """Version 1 is the intent file ``serve`` first started with; then one version per
        change through the API or found in the lab."""
        return [
            VersionInfo(version=v.version, time=v.time, who=v.who)
            for v in controller.store.versions()
        ]

    @adm.get("/versions/{version}", summary="One intent version, with its YAML")
    def read_version(
        version: Annotated[int, FastApiPath(ge=1, le=2**62)], who: Admin
    ) -> VersionInfo:
        v = controller.store.version(version)
        if v is None:
            raise _not_found(f"no version {version}")
        return VersionInfo(version=v.version, time=v.time, who=v.who, yaml=v.yaml)

    @adm.get(
        "/intent",
        summary="The lab's current intent as YAML",
        response_class=PlainTextResponse,
        responses={200: {"content": {"application/yaml": {}}}},
    )
    def read_intent(who: Admin) -> PlainTextResponse:
        """What ``polynimbus export`` prints."""
        from polynimbus.orchestrate import intent_yaml

        return PlainTextResponse(intent_yaml(controller.current()), media_type="application/yaml")

    # ------------------------------------------------------------ tenant API
    @ten.get("/{tenant}", summary="Read your tenant")
    def tenant_self(tenant: str, who: Scoped) -> dict[str, Any]:
        """Name, rate and networks (the token is not shown here)."""
        intent = controller.current()
        if tenant not in {t.name for t in intent.tenants}:
            raise _not_found(f"no tenant {tenant!r}")
        return tenant_view(controller.plan(intent), intent, tenant)

    @ten.get("/{tenant}/networks", summary="List your networks")
    def list_networks(tenant: str, who: Scoped) -> list[dict[str, Any]]:
        return list(tenant_self(tenant, who)["networks"])

    @ten.post("/{tenant}/networks", status_code=status.HTTP_201_CREATED, summary="Create a network")
    def create_network(tenant: str, body: NetworkBody, who: Scoped) -> Applied:
        """A network on one site (routed) or several (one layer-2 domain, seed 004)."""

        def change(doc: dict[str, Any]) -> None:
            t = doc["tenants"][_tenant_index(doc, tenant)]
            t.setdefault("networks", []).append(_network_doc(body))

        def after(new: Intent) -> dict[str, Any]:
            return {"network": network_view(build_plan(new), new, tenant, body.name)}

        return controller.write(
            who, f"create network {tenant}/{body.name}", change, after, network=body.name
        )

    @ten.get("/{tenant}/networks/{network}", summary="Read a network")
    def read_network(tenant: str, network: str, who: Scoped) -> dict[str, Any]:
        intent = controller.current()
        if tenant not in {t.name for t in intent.tenants}:
            raise _not_found(f"no tenant {tenant!r}")
        return network_view(controller.plan(intent), intent, tenant, network)

    @ten.delete("/{tenant}/networks/{network}", summary="Delete a network and its hosts")
    def delete_network(tenant: str, network: str, who: Scoped) -> Applied:
        def change(doc: dict[str, Any]) -> None:
            t = doc["tenants"][_tenant_index(doc, tenant)]
            del t["networks"][_network_index(t, network)]

        return controller.write(who, f"delete network {tenant}/{network}", change, network=network)

    def _net_after(tenant: str, network: str) -> Callable[[Intent], dict[str, Any]]:
        def after(new: Intent) -> dict[str, Any]:
            return {"network": network_view(build_plan(new), new, tenant, network)}

        return after

    @ten.post(
        "/{tenant}/networks/{network}/sites",
        summary="Extend a network to another site (layer 2)",
    )
    def extend_network(tenant: str, network: str, body: SiteBody, who: Scoped) -> Applied:
        """Seed 004's main operation: the network's broadcast domain is stretched into
        ``site`` (VXLAN inside the encrypted tunnels); its hosts keep their addresses."""

        def change(doc: dict[str, Any]) -> None:
            t = doc["tenants"][_tenant_index(doc, tenant)]
            n = t["networks"][_network_index(t, network)]
            if body.site in n["sites"]:
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    f"network {network!r} already spans site {body.site!r}",
                )
            n["sites"].append(body.site)

        return controller.write(
            who,
            f"extend {tenant}/{network} to {body.site}",
            change,
            _net_after(tenant, network),
            network=network,
        )

    @ten.delete("/{tenant}/networks/{network}/sites/{site}", summary="Stop spanning a site")
    def shrink_network(tenant: str, network: str, site: str, who: Scoped) -> Applied:
        """The network leaves ``site``; a host still there is a 422 (detach or move it)."""

        def change(doc: dict[str, Any]) -> None:
            t = doc["tenants"][_tenant_index(doc, tenant)]
            n = t["networks"][_network_index(t, network)]
            if site not in n["sites"]:
                raise _not_found(f"network {network!r} does not span site {site!r}")
            n["sites"].remove(site)

        return controller.write(
            who,
            f"shrink {tenant}/{network} off {site}",
            change,
            _net_after(tenant, network),
            network=network,
        )

    @ten.post(
        "/{tenant}/networks/{network}/hosts",
        status_code=status.HTTP_201_CREATED,
        summary="Attach a host",
    )
    def attach_host(tenant: str, network: str, body: HostBody, who: Scoped) -> Applied:
        """``name`` is ``SITE/HOST`` on a site the network spans; without ``address`` the
        host takes the next free address of the subnet."""

        def change(doc: dict[str, Any]) -> None:
            t = doc["tenants"][_tenant_index(doc, tenant)]
            n = t["networks"][_network_index(t, network)]
            n.setdefault("hosts", []).append(_host_doc(body))

        return controller.write(
            who,
            f"attach {body.name} to {tenant}/{network}",
            change,
            _net_after(tenant, network),
            network=network,
            pin=(tenant, network),
        )

    @ten.delete("/{tenant}/networks/{network}/hosts/{site}/{host}", summary="Detach a host")
    def detach_host(tenant: str, network: str, site: str, host: str, who: Scoped) -> Applied:
        def change(doc: dict[str, Any]) -> None:
            t = doc["tenants"][_tenant_index(doc, tenant)]
            n = t["networks"][_network_index(t, network)]
            del n["hosts"][_host_index(n, f"{site}/{host}")]

        return controller.write(
            who,
            f"detach {site}/{host} from {tenant}/{network}",
            change,
            _net_after(tenant, network),
            network=network,
            pin=(tenant, network),
        )

    @ten.post(
        "/{tenant}/networks/{network}/hosts/{site}/{host}/move",
        summary="Move a host to another site of its network",
    )
    def move_host(
        tenant: str, network: str, site: str, host: str, body: MoveBody, who: Scoped
    ) -> Applied:
        """The host keeps its address and MAC (seed 001's migration); the target site must
        be one the network spans (else 422 saying how to extend it)."""
        return _move(controller, who, tenant, network, f"{site}/{host}", body.to_site)

    app.include_router(adm)
    app.include_router(ten)
    return app


def _request_hint(error: Any) -> str | None:
    kind = error.get("type", "")
    if kind == "missing":
        return "add it to the request"
    if kind == "extra_forbidden":
        return "remove it: the request does not take that key"
    if kind == "json_invalid":
        return "send a JSON document with Content-Type: application/json"
    return None


def _move(
    controller: Controller, who: Caller, tenant: str, network: str, key: str, to_site: str
) -> Applied:
    """Move tenant host ``key`` (``SITE/HOST``) of ``tenant``/``network`` to ``to_site``,
    keeping its address and MAC.

    The intent is read under the write lock. :func:`polynimbus.move.moved_intent` checks
    the move (its :class:`~polynimbus.move.MoveError`: 409 for the site the host is on,
    else 422 at the host's path, with its message and hint). On the lab,
    :func:`polynimbus.move.move_host` moves it live (its namespace, processes and TCP
    connections; ``moved.downtime_ms``); on the fake target the moved intent is applied
    like any other change.
    """
    site, _, name = key.partition("/")
    with controller.write_lock:
        intent = controller.current()
        controller.note("found in the lab")
        ti = next((i for i, t in enumerate(intent.tenants) if t.name == tenant), None)
        if ti is None:
            raise _not_found(f"no tenant {tenant!r}")
        nets = intent.tenants[ti].networks
        ni = next((i for i, n in enumerate(nets) if n.name == network), None)
        if ni is None:
            raise _not_found(f"no network {network!r} in tenant {tenant!r}")
        hi = next((i for i, h in enumerate(nets[ni].hosts) if h.name == key), None)
        if hi is None:
            raise _not_found(f"no host {key!r} in network {network!r}")
        host_path = f"tenants[{ti}].networks[{ni}].hosts[{hi}].name"
        view = network_view(controller.plan(intent), intent, tenant, network)
        host = next(h for h in view["hosts"] if f"{h['site']}/{h['name']}" == key)
        moved: dict[str, Any] = {
            "from": key,
            "to": f"{to_site}/{name}",
            "address": host["address"],
            "mac": host["mac"],
        }
        try:
            new = moved_intent(intent, tenant, site, name, to_site)
        except MoveError as exc:
            if to_site == site:
                raise HTTPException(status.HTTP_409_CONFLICT, _with_hint(exc)) from None
            # about the caller's own host, network and the lab's sites (the tenant exists)
            problem = {"path": host_path, "message": exc.message, "hint": exc.hint}
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [problem]) from None
        except IntentError as exc:
            # the problems are the moved intent's: where the host's entry names to_site
            doc = _dump_intent(intent)
            entry = {"name": moved["to"], "address": host["address"]}
            doc["tenants"][ti]["networks"][ni]["hosts"][hi] = entry
            raise controller.invalid(who, doc, _problem_dicts(exc), network) from None
        what = f"move {tenant}:{key} to {to_site}"

        def after(now: Intent) -> dict[str, Any]:
            return {"network": network_view(build_plan(now), now, tenant, network), "moved": moved}

        if controller.applier.target != "lab":
            return controller.commit(who, what, controller.checked(who, _dump_intent(new)), after)
        try:
            result = move_host(
                intent, f"{tenant}:{key}", to_site, state_dir=controller.applier.state_dir
            )
        except (StateError, LabNotFoundError) as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, _with_hint(exc)) from None
        except PolynimbusError as exc:  # MoveError, IntentError: checked above; the lab
            controller._note(who, what + " (failed)")
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, _with_hint(exc)) from None
        version = controller._note(who, what)
        moved["live"] = True
        if result.downtime_ms is not None:
            moved["downtime_ms"] = result.downtime_ms
        return controller.answer(
            who, what, version, result.intent, result.changes, [], after(result.intent)
        )


def _dump_intent(intent: Intent) -> dict[str, Any]:
    return intent.model_dump(mode="json", by_alias=True, exclude_none=True)


__all__ = ["Caller", "Controller", "create_app"]
