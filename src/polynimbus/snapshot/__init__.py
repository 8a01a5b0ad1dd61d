"""Snapshots of a lab's network state (seed 001 §3): its intent, plan and what is live.

- :mod:`.model`: the snapshot document, serialisation without payloads, differences (pure);
- :mod:`.store`: the files (``snapshots/NAME.json`` in the lab's state directory);
- :mod:`.lab`: save, diff against the live lab, restore (through ``lab_up``).

See docs/snapshots.md.
"""
