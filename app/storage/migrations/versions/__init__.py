"""One file per schema revision; see docs/storage.md for how to add one."""
