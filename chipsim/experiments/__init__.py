"""The paper's evaluations as experiments: compare (depth), sweep (noise, bits, negatives), reproduce (all).

``jobs`` runs their independent points in parallel worker processes and
streams each finished point to disk, so an interrupted experiment resumes.
"""
