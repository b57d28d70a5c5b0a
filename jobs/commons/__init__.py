"""Reading Wikimedia Commons: its API, its licenses and its file pages' metadata. Self-contained, like every job."""
