"""The phantom world: synthetic chest radiographs with known findings.

MIMIC-CXR cannot ship with Concord, so tests, the demo and model training use
a procedural stand-in: patients (:mod:`.anatomy`), their studies and findings
(:mod:`.world`, :mod:`.truth`), films rendered from them (:mod:`.render`,
:mod:`.signatures`) and reports written about them, all in MIMIC-CXR-JPG's
layout so that one reader serves both.
"""
