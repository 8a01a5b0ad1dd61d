"""Intent: the typed model of what the user asks for, its loading and its validation."""

from polynimbus.intent.load import load_intent, load_intent_text
from polynimbus.intent.models import Intent, Overlay, SiteSpec

__all__ = ["Intent", "Overlay", "SiteSpec", "load_intent", "load_intent_text"]
