"""The hub: one per machine-session; the store, the live view of every runtime, routing."""
