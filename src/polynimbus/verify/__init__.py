"""Verification: does the running lab do what the plan says, and how well.

- :mod:`~polynimbus.verify.reachability`: every host pings every other host (fping).
- :mod:`~polynimbus.verify.throughput`: iperf3 through the overlay and over the underlay.
"""

from polynimbus.verify.report import VerifyReport, run_verify

__all__ = ["VerifyReport", "run_verify"]
