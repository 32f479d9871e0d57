"""The Textual app (the only part of kbterm that imports textual)."""
