"""Robustness suite: mutated DICOM imports, killed processes, full disks, audit completeness.

See docs/robustness.md. ``mutations`` builds the mutated files, ``harness`` runs each
scenario (shared by ``test_robustness.py`` and ``bench/robustness.py``) and
``child`` holds the entry points of the child processes.
"""
