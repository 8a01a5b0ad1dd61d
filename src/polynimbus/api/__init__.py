"""The controller's REST API (``polynimbus serve``): admin and tenant APIs over one lab.

:func:`open_controller` prepares what the application needs (the store, the admin token,
the tenants' tokens); :func:`polynimbus.api.app.create_app` builds the FastAPI application.
See docs/api.md.
"""

from __future__ import annotations

from polynimbus.api.app import Controller, create_app
from polynimbus.api.applier import Applier
from polynimbus.api.store import DB_FILE, Store, ensure_admin_token
from polynimbus.intent.models import Intent


def open_controller(intent: Intent, intent_text: str, applier: Applier) -> Controller:
    """The API's controller for a lab that ``applier`` already converged to ``intent``
    (whose file text is ``intent_text``), in the applier's state directory.

    Opens (or creates, 0600) ``api.sqlite``, whose first version is ``intent_text``; a
    later start records the lab's intent as a new version when it differs from the last
    one. Generates the admin token file if missing, and a token for each tenant that has
    none.

    Raises:
        StateError: ``api.sqlite`` or ``admin.token`` is unsafe or unreadable.
    """
    state_dir = applier.state_dir
    store = Store(state_dir / DB_FILE)
    if store.latest() is None:
        store.add_version(intent_text, "serve: the intent file")
    token_file = ensure_admin_token(state_dir)
    store.ensure_tokens([t.name for t in intent.tenants])
    controller = Controller(applier, store, token_file)
    controller.note("serve: the lab at start")
    return controller


__all__ = ["Controller", "create_app", "open_controller"]
