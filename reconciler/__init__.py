"""checkin-reconciler: keep Firestore data in the shape a YAML spec declares, with additive patches only."""

__version__ = "0.1.0"
