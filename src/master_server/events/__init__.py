"""Events: what clients report, stored in arrival order and queried newest first."""
